"""Rule 1: model versions, their personalization families, and which profiles serve which prompts."""

from __future__ import annotations

import pytest

from shared.domain.families import DEFAULT_VERSION, FAMILIES, family_of, is_version, usable_with


@pytest.mark.parametrize(
    ("version", "family"),
    [("6", "v6"), ("6.1", "v6"), ("7", "v7"), ("8", "v7"), ("8.1", "v7")],
)
def test_rule1_versions_belong_to_their_family(version: str, family: str) -> None:
    assert family_of(version) == family


@pytest.mark.parametrize("version", ["5.2", "5", "4", "9", "10.1"])
def test_rule1_versions_outside_v6_and_v7_have_no_personalization(version: str) -> None:
    assert family_of(version) is None


def test_rule1_the_default_version_is_personalizable() -> None:
    assert family_of(DEFAULT_VERSION) in FAMILIES


@pytest.mark.parametrize("text", ["6", "6.1", "10", "8.12"])
def test_is_version_accepts_version_numbers(text: str) -> None:
    assert is_version(text)


@pytest.mark.parametrize("text", ["", "v7", "7.", ".7", "7.1.1", "100", "7 "])
def test_is_version_refuses_anything_else(text: str) -> None:
    assert not is_version(text)


@pytest.mark.parametrize("prompt", ["7", "8", "8.1"])
def test_rule1_v7_profile_made_at_7_serves_7_8_and_8_1(prompt: str) -> None:
    assert usable_with("v7", "7", prompt)


@pytest.mark.parametrize("made_at", ["8", "8.1"])
def test_rule1_v7_profile_made_at_8_serves_8_but_not_7(made_at: str) -> None:
    assert not usable_with("v7", made_at, "7")
    assert usable_with("v7", made_at, "8")
    assert usable_with("v7", made_at, "8.1")


@pytest.mark.parametrize("made_at", ["6", "6.1"])
@pytest.mark.parametrize("prompt", ["6", "6.1", "7", "8", "8.1"])
def test_rule1_v6_profile_serves_v6_and_v7_prompts(made_at: str, prompt: str) -> None:
    assert usable_with("v6", made_at, prompt)


@pytest.mark.parametrize("made_at", ["7", "8", "8.1"])
@pytest.mark.parametrize("prompt", ["6", "6.1"])
def test_rule1_v7_profile_does_not_serve_v6_prompts(made_at: str, prompt: str) -> None:
    assert not usable_with("v7", made_at, prompt)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prompt", ["5.2", "9"])
def test_rule1_no_profile_serves_a_version_without_personalization(
    family: str, prompt: str
) -> None:
    made_at = "6.1" if family == "v6" else "7"
    assert not usable_with(family, made_at, prompt)  # type: ignore[arg-type]
