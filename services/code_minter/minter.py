"""code-minter's application layer: profile changes in, ``CodeMinted`` events out.

Per partition it follows the change stream the projector writes; for the last change of
each profile in a batch it decides whether a code is due and appends ``CodeMinted`` to the
log, together with its own memory of the last code and the new position, in one step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared.adapters.follower import Entry
from shared.adapters.store import MINT_AT_POSITION, text
from shared.domain import events as ev
from shared.domain.codes import candidates, mint_due
from shared.domain.projection import ProfileChange
from shared.keys import Partition
from shared.settings import Settings


def memory(code: str, evidence: int, vector: str) -> bytes:
    """The minter's memory of a profile's last code: what the next one's drift is measured from."""
    return json.dumps({"code": code, "evidence": evidence, "vector": vector}).encode()


@dataclass(frozen=True)
class Mint:
    code: str
    change: ProfileChange
    event: bytes

    def memory(self) -> bytes:
        return memory(self.code, self.change.evidence, ev.encode_vector(self.change.vector))

    def claim(self) -> bytes:
        return f"{self.change.profile_id}|{self.change.evidence}".encode()


class Minter:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.script = client.register_script(MINT_AT_POSITION)

    @staticmethod
    def position_key(partition: Partition) -> str:
        return partition.minter_position

    async def apply(self, partition: Partition, position: str, entries: list[Entry]) -> bool:
        latest: dict[str, ProfileChange] = {}
        for _, fields in entries:
            change = ProfileChange.from_bytes(fields[b"change"])
            latest[change.profile_id] = change
        due = await self._due(partition, list(latest.values()))
        mints = [await self._mint(partition, change) for change in due]
        keys = [partition.minter_position, partition.log, partition.changes]
        args: list[Any] = [position, entries[-1][0], len(mints)]
        for mint in mints:
            keys += [
                partition.minter_profile(mint.change.profile_id),
                partition.minter_code(mint.code),
            ]
            args += [mint.claim(), mint.memory(), mint.event]
        reply = await self.script(keys=keys, args=args)
        status = text(reply[0])
        if status == "taken":
            raise RuntimeError(f"code {text(reply[1])} was taken meanwhile; retrying")
        return status == "ok"

    async def _due(self, partition: Partition, changes: list[ProfileChange]) -> list[ProfileChange]:
        unlocked = [c for c in changes if c.unlocked]
        memories = (
            await self.client.mget([partition.minter_profile(c.profile_id) for c in unlocked])
            if unlocked
            else []
        )
        due = []
        for change, raw in zip(unlocked, memories, strict=True):
            last = json.loads(raw) if raw else None
            if mint_due(
                last["evidence"] if last else None,
                ev.decode_vector(last["vector"]) if last else None,
                change.evidence,
                change.vector,
                self.settings.mint_every,
                self.settings.mint_drift,
                self.settings.mint_min_signals,
            ):
                due.append(change)
        return due

    async def _mint(self, partition: Partition, change: ProfileChange) -> Mint:
        code = await self._free_code(partition, change.profile_id, change.evidence)
        payload = ev.CodeMinted(
            code=code,
            profile_id=change.profile_id,
            profile_name=change.name,
            family=change.family,
            version=change.version,
            vector=ev.encode_vector(change.vector),
            evidence=change.evidence,
            picks=change.picks,
        )
        now = ev.utcnow()
        event = ev.record(
            payload,
            event_id=f"mint:{change.profile_id}:{change.evidence}",
            member_id=change.member_id,
            occurred_at=now,
            now=now,
        )
        return Mint(code, change, event.to_bytes())

    async def _free_code(self, partition: Partition, profile_id: str, evidence: int) -> str:
        """The first candidate not claimed by another state (the script checks it again)."""
        for code in candidates(profile_id, evidence, partition.index, self.settings.partitions):
            claim = await self.client.get(partition.minter_code(code))
            if claim is None or text(claim) == f"{profile_id}|{evidence}":
                return code
        raise RuntimeError(f"no free code for {profile_id!r} at evidence {evidence}")
