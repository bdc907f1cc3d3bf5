"""Model versions and the personalization families they belong to (brief rule 1)."""

from __future__ import annotations

import re
from typing import Literal

Family = Literal["v6", "v7"]
FAMILIES: tuple[Family, ...] = ("v6", "v7")
DEFAULT_VERSION = "7"
_VERSION = re.compile(r"^\d{1,2}(\.\d{1,2})?$")


def is_version(text: str) -> bool:
    return bool(_VERSION.match(text))


def family_of(version: str) -> Family | None:
    """The family a model version belongs to, or None where personalization does not exist.

    V6 is 6 and 6.x; V7 is 7 and every later version that accepts V7 profiles (8, 8.1).
    """
    major = int(version.split(".")[0])
    if major == 6:
        return "v6"
    if major in (7, 8):
        return "v7"
    return None


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def usable_with(profile_family: Family, profile_version: str, prompt_version: str) -> bool:
    """Whether a profile (or code) made for ``profile_version`` may condition a prompt.

    A V7-family profile serves 7, 8 and 8.1, except that one made while the default was
    8.x serves only 8.x and later. A V6 profile also serves V7-family prompts.
    """
    prompt_family = family_of(prompt_version)
    if prompt_family is None:
        return False
    if profile_family == "v6":
        return True
    if prompt_family == "v6":
        return False
    return _as_tuple(prompt_version)[0] >= _as_tuple(profile_version)[0]
