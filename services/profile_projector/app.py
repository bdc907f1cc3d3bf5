"""profile-projector: the event log in, read models out.

Run: ``faststream run services.profile_projector.app:app``.
"""

from __future__ import annotations

from faststream import FastStream

from shared.adapters.follower import AtPosition
from shared.adapters.generation import read_generation
from shared.adapters.lifecycle import persistently
from shared.adapters.readmodels import RedisReadModels
from shared.adapters.service import service
from shared.keys import Partition
from shared.settings import Settings

from .projector import Projector

SERVICE = "profile-projector"


def log(partition: Partition) -> str:
    return partition.log


def build(settings: Settings) -> FastStream:
    svc = service(SERVICE, "Folds the event log into read models; emits profile changes.", settings)

    @svc.app.after_startup
    async def start() -> None:
        generation = await persistently(lambda: read_generation(svc.client), SERVICE)
        models = RedisReadModels(svc.client, settings, generation)
        projector = Projector(models, settings, follow_active=True)
        svc.follow(AtPosition(log, projector.position_key, projector.apply), "follow-log")

    return svc.app


app = build(Settings.from_env())
