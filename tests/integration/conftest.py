from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from services.code_minter.app import build as build_minter
from services.profile_projector.app import build as build_projector
from services.prompt_resolver.app import build as build_resolver
from services.selection_ingest.app import build as build_ingest
from services.selection_ingest.grid_app import build as build_grid
from shared.client import Client
from shared.settings import Settings


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[Client]:
    """All the services in this process, and a client of the public contract."""
    async with AsyncExitStack() as stack:
        for build in (build_ingest, build_grid, build_projector, build_minter, build_resolver):
            await stack.enter_async_context(build(settings))
        client = await stack.enter_async_context(Client(settings.redis_url, settings.partitions))
        yield client
