"""Settings read from the environment, and key names that keep a partition in one cluster slot."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.keys import Partition, all_partitions, partition_for, partition_of
from shared.settings import Settings


def test_settings_defaults_without_environment() -> None:
    values = Settings.from_env({"HOME": "/root", "PATH": "/bin"})
    assert values.redis_url == "redis://127.0.0.1:6379/0"
    assert (values.partitions, values.embed_dim, values.unlock_v6, values.unlock_v7) == (
        4,
        256,
        40,
        40,
    )
    assert values.replica


def test_settings_read_prefixed_variables_and_redis_url() -> None:
    values = Settings.from_env(
        {
            "REDIS_URL": "redis://cache:6380/2",
            "PZ_PARTITIONS": "16",
            "PZ_EMBED_DIM": "32",
            "PZ_UNLOCK_V6": "5",
            "PZ_UNLOCK_V7": "7",
            "PZ_MINT_DRIFT": "0.1",
            "PZ_GRIDS_KEPT": "8",
            "PZ_REPLICA": "ingest-3",
        }
    )
    assert values.redis_url == "redis://cache:6380/2"
    assert (values.partitions, values.embed_dim, values.grids_kept) == (16, 32, 8)
    assert (values.unlock_threshold("v6"), values.unlock_threshold("v7")) == (5, 7)
    assert (values.mint_drift, values.replica) == (0.1, "ingest-3")


def test_settings_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PZ_PARTITIONS", "12")
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    values = Settings.from_env()
    assert (values.partitions, values.redis_url) == (12, "redis://elsewhere:6379/0")


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("PZ_PARTITIONS", "four", "partitions"),
        ("PZ_PARTITIONS", "0", "partitions"),
        ("PZ_PARTITIONS", "2048", "partitions"),
        ("PZ_EMBED_DIM", "1", "embed_dim"),
        ("PZ_UNLOCK_V7", "0", "unlock_v7"),
        ("PZ_MINT_DRIFT", "0", "mint_drift"),
        ("PZ_MINT_DRIFT", "much", "mint_drift"),
        ("PZ_BATCH_SIZE", "-1", "batch_size"),
    ],
)
def test_settings_bad_value_raises_an_error_naming_the_field(
    variable: str, value: str, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.from_env({variable: value})
    [error] = caught.value.errors()
    assert error["loc"] == (field,)
    assert field in str(caught.value)


def test_settings_are_frozen() -> None:
    values = Settings.from_env({})
    with pytest.raises(ValidationError):
        values.partitions = 8  # type: ignore[misc]


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the first non-empty ``{...}``, else the key."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start == -1 or end == -1 or end == start + 1:
        return key
    return key[start + 1 : end]


def every_key(partition: Partition) -> list[str]:
    read_model = partition.read_model(3)
    return [
        partition.inbox,
        partition.log,
        partition.dead_letters,
        partition.stats,
        partition.changes,
        partition.member_state("alice"),
        partition.idempotency("alice", "web:{42}"),
        partition.receipt("alice", "web:{42}"),
        partition.deleted_profiles("alice"),
        partition.minter_position,
        partition.minter_profile("p1a2b3"),
        partition.minter_code("abc1234"),
        partition.lease("projector"),
        read_model.position,
        read_model.member("alice"),
        read_model.profile("p1a2b3"),
        read_model.code("abc1234"),
        read_model.pattern(),
    ]


@pytest.mark.parametrize("index", [0, 1, 7, 1023])
def test_every_key_of_a_partition_hashes_on_its_tag(index: int) -> None:
    keys = every_key(Partition(index))
    assert {hash_tag(key) for key in keys} == {f"p{index}"}
    assert len(set(keys)) == len(keys)


def test_partitions_have_different_tags() -> None:
    assert len({Partition(i).tag for i in range(64)}) == 64


def test_read_model_generations_do_not_share_keys() -> None:
    partition = Partition(2)
    assert partition.read_model(1).member("alice") != partition.read_model(2).member("alice")


def test_partition_of_is_crc32_of_the_text_modulo_the_partition_count() -> None:
    assert partition_of("alice", 4) == zlib.crc32(b"alice") % 4
    assert partition_of("zoë", 7) == zlib.crc32("zoë".encode()) % 7


@given(key=st.text(min_size=1, max_size=64), partitions=st.integers(min_value=1, max_value=1024))
def test_partition_of_is_stable_and_in_range(key: str, partitions: int) -> None:
    index = partition_of(key, partitions)
    assert 0 <= index < partitions
    assert partition_of(key, partitions) == index
    assert partition_for(key, partitions) == Partition(index)


def test_one_partition_holds_everything() -> None:
    assert {partition_of(key, 1) for key in ("alice", "p1", "abc1234")} == {0}


def test_all_partitions_lists_each_once_in_order() -> None:
    assert all_partitions(3) == [Partition(0), Partition(1), Partition(2)]
