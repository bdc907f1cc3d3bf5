"""The follower's one failure policy: single entries while failing, a growing pause, and an
entry given up on after ``max_attempts``, whichever way the stream is read."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.adapters.follower import Attempts, Batch, Entry, backoff


def entries(*ids: str) -> list[Entry]:
    return [(i, {b"event": i.encode()}) for i in ids]


def test_a_follower_that_has_not_failed_reads_whole_batches() -> None:
    attempts = Attempts(max_attempts=5)
    assert attempts.batch_size(256) == 256
    assert attempts.attempt(Batch("0-0", entries("1-0", "2-0"))) == 1


def test_a_failed_batch_is_read_again_one_entry_at_a_time() -> None:
    attempts = Attempts(max_attempts=1)
    batch = Batch("0-0", entries("1-0", "2-0"))
    assert attempts.failed(batch) == 1
    assert not attempts.exhausted(batch), "a batch of several is never given up on whole"
    assert attempts.batch_size(256) == 1
    single = Batch("0-0", entries("1-0"))
    assert attempts.attempt(single) == 2
    assert attempts.failed(single) == 2 and attempts.exhausted(single)


def test_failures_count_per_place_and_end_when_the_batch_succeeds() -> None:
    attempts = Attempts(max_attempts=5)
    attempts.failed(Batch("1-0", entries("2-0")))
    attempts.failed(Batch("1-0", entries("2-0")))
    assert attempts.attempt(Batch("1-0", entries("2-0"))) == 3
    assert attempts.attempt(Batch("2-0", entries("3-0"))) == 1, "another place starts afresh"
    assert attempts.failed(Batch("2-0", entries("3-0"))) == 1
    attempts.clear()
    assert attempts.batch_size(256) == 256
    assert attempts.attempt(Batch("2-0", entries("3-0"))) == 1


def test_the_pause_doubles_with_each_failure_up_to_two_seconds() -> None:
    assert [backoff(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert backoff(50) == 2.0


@given(st.integers(min_value=2, max_value=20), st.integers(min_value=2, max_value=300))
def test_a_poison_entry_is_given_up_on_after_max_attempts_the_first_in_its_batch(
    max_attempts: int, batch_size: int
) -> None:
    attempts = Attempts(max_attempts)
    tried = 0
    while True:
        size = attempts.batch_size(batch_size)
        batch = Batch("5-0", entries(*(f"{6 + n}-0" for n in range(size))))
        tried += 1
        assert attempts.attempt(batch) == tried
        attempts.failed(batch)
        if attempts.exhausted(batch):
            break
    assert tried == max_attempts
