"""Rule 7: codes are derived from the state they label, live in a partition, and are minted when due."""

from __future__ import annotations

import numpy as np
import pytest

from shared.domain.codes import (
    ALPHABET,
    CODE_LENGTH,
    candidate,
    cosine_distance,
    derive_code,
    mint_due,
)
from shared.keys import partition_of
from shared.prompt import parse_prompt

EAST = np.array([1.0, 0.0, 0.0])
NORTH_EAST = np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)


@pytest.mark.parametrize("salt", range(20))
def test_rule7_code_is_seven_characters_of_the_alphabet(salt: int) -> None:
    code = candidate("p1a2b3", 40, salt)
    assert len(code) == CODE_LENGTH == 7
    assert set(code) <= set(ALPHABET)


def test_rule7_code_reads_as_a_code_in_a_prompt() -> None:
    code = candidate("p1a2b3", 40, 0)
    assert parse_prompt(f"a cat --p {code}").p_values[0].looks_like_code


def test_rule7_same_profile_evidence_and_salt_give_the_same_code() -> None:
    assert candidate("p1a2b3", 40, 3) == candidate("p1a2b3", 40, 3)


def test_rule7_another_state_gives_another_code() -> None:
    codes = {
        candidate("p1a2b3", 40, 0),
        candidate("p1a2b3", 41, 0),
        candidate("p1a2b4", 40, 0),
        candidate("p1a2b3", 40, 1),
    }
    assert len(codes) == 4


@pytest.mark.parametrize("partition", range(4))
def test_derive_code_lands_in_the_requested_partition(partition: int) -> None:
    code = derive_code("p1a2b3", 40, partition, 4)
    assert partition_of(code, 4) == partition


def test_derive_code_is_the_first_candidate_of_its_partition() -> None:
    salts = range(100)
    first = next(s for s in salts if partition_of(candidate("p9", 7, s), 4) == 2)
    assert derive_code("p9", 7, 2, 4) == candidate("p9", 7, first)


def test_derive_code_is_deterministic() -> None:
    assert derive_code("p1a2b3", 40, 1, 4) == derive_code("p1a2b3", 40, 1, 4)


def test_derive_code_skips_taken_codes_and_stays_in_its_partition() -> None:
    free = derive_code("p1a2b3", 40, 1, 4)
    taken = {free}
    again = derive_code("p1a2b3", 40, 1, 4, taken=taken.__contains__)
    assert again != free
    assert partition_of(again, 4) == 1


def test_derive_code_with_one_partition_is_the_first_candidate() -> None:
    assert derive_code("p1a2b3", 40, 0, 1) == candidate("p1a2b3", 40, 0)


def test_derive_code_gives_up_clearly_when_everything_is_taken() -> None:
    with pytest.raises(RuntimeError, match="no free code for profile 'p1'"):
        derive_code("p1", 5, 0, 1, taken=lambda code: True)


def test_mint_due_for_the_first_code() -> None:
    assert mint_due(None, None, 1, EAST, every=25, drift=0.05)


def test_mint_due_when_every_new_signals_arrived() -> None:
    assert mint_due(10, EAST, 35, EAST, every=25, drift=0.05)
    assert not mint_due(10, EAST, 34, EAST, every=25, drift=0.05)


def test_mint_due_when_the_taste_drifted_enough() -> None:
    moved = cosine_distance(EAST, NORTH_EAST)
    assert mint_due(10, EAST, 11, NORTH_EAST, every=25, drift=moved)
    assert not mint_due(10, EAST, 11, NORTH_EAST, every=25, drift=moved + 0.01)


@pytest.mark.parametrize("evidence", [10, 9])
def test_mint_not_due_without_new_evidence(evidence: int) -> None:
    assert not mint_due(10, EAST, evidence, -EAST, every=1, drift=0.01)


def test_cosine_distance() -> None:
    assert cosine_distance(EAST, EAST) == pytest.approx(0.0)
    assert cosine_distance(EAST, -EAST) == pytest.approx(2.0)
    assert cosine_distance(EAST, NORTH_EAST) == pytest.approx(1 - 1 / np.sqrt(2.0))
    assert cosine_distance(EAST, np.zeros(3)) == 1.0
