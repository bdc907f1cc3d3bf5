"""Stream and key names. Everything of one partition shares a Redis Cluster hash tag ``{pN}``.

A member, a profile ID and a code each map to a partition with :func:`partition_of`
(CRC-32 of the UTF-8 text, modulo the partition count), so any service can find the
slot of a code or a profile from the handle alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.partitions import partition_of

PREFIX = "pz"
RESOLVE_RPC = f"{PREFIX}:rpc:resolve"
PROFILES_RPC = f"{PREFIX}:rpc:profiles"
GRID_RPC = f"{PREFIX}:rpc:grid"
ACTIVE_GENERATION = f"{PREFIX}:rm:active"
CONFIG = f"{PREFIX}:config"


def image_key(image_id: str) -> str:
    return f"{PREFIX}:img:{image_id}"


def family_images(family: str) -> str:
    """The set of catalog image IDs of one family (kept by ingest, for grid candidates)."""
    return f"{PREFIX}:catalog:{family}"


@dataclass(frozen=True)
class Partition:
    """The keys of one partition; they all hash to the same cluster slot."""

    index: int

    @property
    def tag(self) -> str:
        return f"{PREFIX}:{{p{self.index}}}"

    @property
    def inbox(self) -> str:
        return f"{self.tag}:inbox"

    @property
    def log(self) -> str:
        return f"{self.tag}:log"

    @property
    def dead_letters(self) -> str:
        return f"{self.tag}:dead"

    @property
    def stats(self) -> str:
        return f"{self.tag}:stats"

    @property
    def changes(self) -> str:
        return f"{self.tag}:changes"

    def member_state(self, member_id: str) -> str:
        return f"{self.tag}:agg:{member_id}"

    def idempotency(self, member_id: str, key: str) -> str:
        """A member's idempotency key (``|`` cannot occur in a member ID, so the two parts
        never run into each other)."""
        return f"{self.tag}:idem:{member_id}|{key}"

    def receipt(self, member_id: str, key: str) -> str:
        """The list ingest pushes the outcome of a member's message to (``BLPOP`` it)."""
        return f"{self.tag}:receipt:{member_id}|{key}"

    def deleted_profiles(self, member_id: str) -> str:
        """The set of a member's deleted profile IDs, kept out of the member state."""
        return f"{self.tag}:gone:{member_id}"

    def liked_images(self, member_id: str) -> str:
        """The set of images a member likes, kept out of the member state."""
        return f"{self.tag}:liked:{member_id}"

    @property
    def unpublished(self) -> str:
        """The images this partition's log registered that grids may not show yet: added in
        the commit that appends their events, removed once they are published."""
        return f"{self.tag}:unpublished"

    def member_set(self, name: str, member_id: str) -> str:
        """One of the sets beside a member's state: ``gone`` or ``liked``."""
        return {"gone": self.deleted_profiles, "liked": self.liked_images}[name](member_id)

    def read_model(self, generation: int) -> ReadModelKeys:
        return ReadModelKeys(f"{self.tag}:rm:{generation}")

    @property
    def minter_position(self) -> str:
        return f"{self.tag}:mint:pos"

    def minter_profile(self, profile_id: str) -> str:
        return f"{self.tag}:mint:profile:{profile_id}"

    def minter_code(self, code: str) -> str:
        return f"{self.tag}:mint:code:{code}"

    def lease(self, role: str) -> str:
        return f"{self.tag}:lease:{role}"

    def skipped(self, role: str) -> str:
        """Log entries ``role`` gave up on (entry ID -> JSON why); a replay skips them too."""
        return f"{self.tag}:skipped:{role}"


@dataclass(frozen=True)
class ReadModelKeys:
    """The keys of one generation of one partition's read models."""

    base: str

    @property
    def position(self) -> str:
        return f"{self.base}:pos"

    def member(self, member_id: str) -> str:
        return f"{self.base}:member:{member_id}"

    def profile(self, profile_id: str) -> str:
        return f"{self.base}:profile:{profile_id}"

    def code(self, code: str) -> str:
        return f"{self.base}:code:{code}"

    def member_code(self, member_id: str, index: int) -> str:
        """The member's ``index``-th code (0 = first); ``|`` never occurs in a member ID."""
        return f"{self.base}:codes:{member_id}|{index}"

    def member_deletion(self, member_id: str, index: int) -> str:
        """The ``index``-th profile the member deleted (0 = first)."""
        return f"{self.base}:deleted:{member_id}|{index}"

    def prior(self, model_id: str) -> str:
        return f"{self.base}:prior:{model_id}"

    @property
    def current_prior(self) -> str:
        return f"{self.base}:prior-current"

    def pattern(self) -> str:
        return f"{self.base}:*"


def partition_for(key: str, partitions: int) -> Partition:
    return Partition(partition_of(key, partitions))


def all_partitions(partitions: int) -> list[Partition]:
    return [Partition(i) for i in range(partitions)]
