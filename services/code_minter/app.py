"""code-minter: profile changes in, ``CodeMinted`` on the log.

Run: ``faststream run services.code_minter.app:app``.
"""

from __future__ import annotations

from faststream import FastStream

from shared.adapters.follower import AtPosition
from shared.adapters.service import service
from shared.keys import Partition
from shared.settings import Settings

from .minter import Minter

SERVICE = "code-minter"


def changes(partition: Partition) -> str:
    return partition.changes


def build(settings: Settings) -> FastStream:
    svc = service(SERVICE, "Mints immutable codes for profile states.", settings)
    minter = Minter(svc.client, settings)

    @svc.app.after_startup
    async def start() -> None:
        svc.follow(AtPosition(changes, minter.position_key, minter.apply), "follow-changes")

    return svc.app


app = build(Settings.from_env())
