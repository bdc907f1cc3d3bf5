"""The prompt grammar: parse a prompt's parameters, rewrite it canonically, map stylize to strength.

A prompt is free text followed by parameters::

    a lighthouse at dusk --p k3j9x2a q9z8x7w::0.5 --s 250 --v 7 --ar 16:9 --no trees, cars

* A parameter (flag) starts at a token boundary (start of the prompt or after whitespace) with
  ``--``, an em dash (``—``) or an en dash (``–``), immediately followed by an ASCII letter. A
  ``--`` inside a word (``well--known``) is not a flag. The flag name is letters, digits, ``_``
  and ``-`` and ends at whitespace or at the end of the prompt; anything else glued to it
  (``--s=250``) is a malformed parameter. Names are case-insensitive.
* A parameter's value is everything after its name up to the next flag, stripped.
* The text is everything before the first flag, without the whitespace that separates it from
  the parameters (trailing whitespace of a prompt without parameters is dropped too, so that
  a rendered prompt parses back to the same text). The text is otherwise never altered.
* ``--p`` / ``--personalize`` / ``--profile`` take zero or more whitespace-separated values;
  each is a code (7 lowercase letters or digits) or a profile ID (1 to 64 of ``A-Za-z0-9_-``),
  optionally followed by ``::weight``: a plain decimal (digits, an optional point) from
  ``WEIGHT_MIN`` (0.001) to ``WEIGHT_MAX`` (1000), default 1. The bounds keep every weighted
  sum of unit vectors far from float underflow and overflow, and a ratio of up to 10^6
  between two weights is more than any taste mix needs. Repeated flags add values; a flag
  without values means "use the member's defaults".
* ``--s`` / ``--stylize``: an integer from 0 to 1000 (default 100).
  ``--v`` / ``--version``: a model version such as ``6``, ``6.1`` or ``7`` (default None).
  Giving either twice with different values is an error.
* Every other parameter passes through untouched, in order.

Every problem raises :class:`PromptError` with a stable code, the offending token and its
character offset in the original prompt.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

INVALID_PARAMETER = "INVALID_PARAMETER"
PROMPT_TOO_LONG = "PROMPT_TOO_LONG"
TOO_MANY_PROFILES = "TOO_MANY_PROFILES"

DEFAULT_MAX_LENGTH = 6000
DEFAULT_MAX_P_VALUES = 10

STYLIZE_MIN = 0
STYLIZE_MAX = 1000
STYLIZE_DEFAULT = 100

WEIGHT_MIN = 0.001
WEIGHT_MAX = 1000.0

P_NAMES = frozenset({"p", "personalize", "profile"})
S_NAMES = frozenset({"s", "stylize"})
V_NAMES = frozenset({"v", "version"})

_FLAG = re.compile(r"(?<!\S)(?:--|[\u2014\u2013])[A-Za-z]\S*")
_FLAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_TOKEN = re.compile(r"\S+")
_CODE = re.compile(r"[a-z0-9]{7}")
_PROFILE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ID_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_WEIGHT = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_INTEGER = re.compile(r"[0-9]+")
_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)?")

_P_VALUE_RULE = (
    "a code (7 lowercase letters or digits) or a profile ID (1 to 64 letters, digits, '_' or '-'),"
    " optionally followed by ::weight"
)
_WEIGHT_RULE = (
    f"a decimal number from {WEIGHT_MIN:g} to {WEIGHT_MAX:g}, such as ::2, ::0.5 or ::1.25"
)


class PromptError(Exception):
    """A prompt that cannot be parsed.

    ``code`` is stable (``INVALID_PARAMETER``, ``PROMPT_TOO_LONG``, ``TOO_MANY_PROFILES``),
    ``message`` says what was wrong, with which value, and what is allowed, ``token`` is the
    offending text and ``position`` its character offset in the original prompt.
    """

    def __init__(self, code: str, message: str, token: str, position: int) -> None:
        super().__init__(code, message, token, position)
        self.code = code
        self.message = message
        self.token = token
        self.position = position

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str | int]:
        """The error as a JSON-ready mapping, e.g. for an RPC reply."""
        return {
            "code": self.code,
            "message": self.message,
            "token": self.token,
            "position": self.position,
        }


@dataclass(frozen=True)
class PValue:
    """One ``--p`` value: a code or profile ID with its weight, as written in the prompt."""

    value: str
    weight: float
    token: str
    position: int

    @property
    def looks_like_code(self) -> bool:
        """True when the value has a code's shape (7 lowercase letters or digits)."""
        return _CODE.fullmatch(self.value) is not None


@dataclass(frozen=True)
class Param:
    """One parameter: canonical ``name`` (``p``, ``s``, ``v`` or the lower-cased name), the
    name as written (``raw_name``, dashes included), its stripped ``value`` and the flag's offset.
    """

    name: str
    raw_name: str
    value: str
    position: int


@dataclass(frozen=True)
class ParsedPrompt:
    """A parsed prompt. ``params`` holds every parameter in order, ``--p``/``--s``/``--v`` too."""

    text: str
    params: tuple[Param, ...]
    personalize: bool
    p_values: tuple[PValue, ...]
    stylize: int
    stylize_explicit: bool
    version: str | None

    @property
    def unknown_params(self) -> tuple[Param, ...]:
        """The parameters this grammar does not interpret, in order."""
        return tuple(p for p in self.params if p.name not in ("p", "s", "v"))


@dataclass(frozen=True)
class _Flag:
    raw_name: str
    start: int
    name_end: int
    value_end: int


def parse_prompt(
    prompt: str,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_p_values: int = DEFAULT_MAX_P_VALUES,
) -> ParsedPrompt:
    """Parse ``prompt``; raise :class:`PromptError` for anything malformed or over the limits.

    ``max_length`` bounds the prompt's length in characters (``PROMPT_TOO_LONG``) and
    ``max_p_values`` the number of ``--p`` values across all ``--p`` flags (``TOO_MANY_PROFILES``).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    _check_length(prompt, max_length)
    flags = _find_flags(prompt)
    text_end = flags[0].start if flags else len(prompt)
    params = tuple(_param(prompt, flag) for flag in flags)
    p_values = _p_values(prompt, flags, params, max_p_values)
    stylize = _single(prompt, flags, params, "s", _stylize_value)
    version = _single(prompt, flags, params, "v", _version_value)
    return ParsedPrompt(
        text=prompt[:text_end].rstrip(),
        params=params,
        personalize=any(p.name == "p" for p in params),
        p_values=p_values,
        stylize=STYLIZE_DEFAULT if stylize is None else stylize,
        stylize_explicit=stylize is not None,
        version=version,
    )


def render_prompt(parsed: ParsedPrompt, p_values: Sequence[str] | None) -> str:
    """Rewrite ``parsed`` in canonical form.

    The text comes first, then the parameters in their original order with canonical names
    (``--p``, ``--s``, ``--v``, ``--<lower-cased name>`` for the others, whose values are kept
    untouched). ``--s`` and ``--v`` appear once, at their first position, with their parsed
    value. All ``--p`` flags merge into one ``--p`` carrying ``p_values`` (resolved tokens such
    as ``"k3j9x2a"`` or ``"q9z8x7w::0.5"``) at the first ``--p`` flag's position; if the prompt
    had no ``--p`` the group is appended after the other parameters; if ``p_values`` is None
    the group is dropped. Raises ValueError for a token that is not a valid ``--p`` value or
    that would read as a parameter (a profile ID such as ``--abc``).
    """
    p_group = None if p_values is None else _p_group(p_values)
    parts = [parsed.text] if parsed.text else []
    seen: set[str] = set()
    for param in parsed.params:
        if param.name in seen and param.name in ("p", "s", "v"):
            continue
        seen.add(param.name)
        part = _render_param(parsed, param, p_group)
        if part is not None:
            parts.append(part)
    if p_group is not None and "p" not in seen:
        parts.append(p_group)
    return " ".join(parts)


def strength(stylize: int) -> float:
    """How strongly personalization applies at a given ``--s``: ``log2(1 + stylize / 100)``.

    A concave map: 0.0 at ``--s 0`` (no personalization), 1.0 at the default ``--s 100``,
    about 1.585 at 200, 2.585 at 500 and ``log2(11)`` ≈ 3.459 at the maximum 1000; strictly
    increasing, so a higher stylize always applies more, with diminishing returns at the top
    end so that ``--s 1000`` strengthens the style without swamping the prompt.
    Raises ValueError for a value outside 0..1000.
    """
    if isinstance(stylize, bool) or not isinstance(stylize, int):
        raise ValueError(f"stylize must be an integer, got {stylize!r}")
    if not STYLIZE_MIN <= stylize <= STYLIZE_MAX:
        raise ValueError(f"stylize must be from {STYLIZE_MIN} to {STYLIZE_MAX}, got {stylize}")
    return math.log2(1 + stylize / 100)


MAX_STRENGTH = strength(STYLIZE_MAX)


def _quote(text: str, limit: int = 40) -> str:
    if not text:
        return "nothing"
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _check_length(prompt: str, max_length: int) -> None:
    if max_length < 0:
        raise ValueError(f"max_length must be >= 0, got {max_length}")
    if len(prompt) > max_length:
        raise PromptError(
            PROMPT_TOO_LONG,
            f"the prompt is {len(prompt)} characters long; at most {max_length} are allowed",
            prompt[max_length : max_length + 32],
            max_length,
        )


def _find_flags(prompt: str) -> list[_Flag]:
    matches = list(_FLAG.finditer(prompt))
    ends = [m.start() for m in matches[1:]] + [len(prompt)]
    return [_flag(match, end) for match, end in zip(matches, ends, strict=False)]


def _flag(match: re.Match[str], value_end: int) -> _Flag:
    token = match.group()
    if not _FLAG_NAME.fullmatch(token, _dash_length(token)):
        raise PromptError(
            INVALID_PARAMETER,
            f"malformed parameter {_quote(token)}: a parameter name is letters, digits, '_' or '-'"
            " and is followed by a space, e.g. '--s 250'",
            token,
            match.start(),
        )
    return _Flag(token, match.start(), match.end(), value_end)


def _dash_length(flag: str) -> int:
    return 2 if flag.startswith("--") else 1


def _param(prompt: str, flag: _Flag) -> Param:
    name = flag.raw_name[_dash_length(flag.raw_name) :].lower()
    return Param(
        name=_canonical_name(name),
        raw_name=flag.raw_name,
        value=prompt[flag.name_end : flag.value_end].strip(),
        position=flag.start,
    )


def _canonical_name(name: str) -> str:
    for canonical, aliases in (("p", P_NAMES), ("s", S_NAMES), ("v", V_NAMES)):
        if name in aliases:
            return canonical
    return name


def _value_tokens(prompt: str, flag: _Flag) -> list[tuple[str, int]]:
    return [(m.group(), m.start()) for m in _TOKEN.finditer(prompt, flag.name_end, flag.value_end)]


def _p_values(
    prompt: str, flags: list[_Flag], params: tuple[Param, ...], max_p_values: int
) -> tuple[PValue, ...]:
    if max_p_values < 0:
        raise ValueError(f"max_p_values must be >= 0, got {max_p_values}")
    values: list[PValue] = []
    for index, param in enumerate(params):
        if param.name == "p":
            values.extend(_p_value(t, pos) for t, pos in _value_tokens(prompt, flags[index]))
    if len(values) > max_p_values:
        extra = values[max_p_values]
        raise PromptError(
            TOO_MANY_PROFILES,
            f"--p takes at most {max_p_values} values in total, got {len(values)}"
            f" ({_quote(extra.token)} is number {max_p_values + 1})",
            extra.token,
            extra.position,
        )
    return tuple(values)


def _p_value(token: str, position: int) -> PValue:
    value, sep, weight_text = token.partition("::")
    _check_p_id(value, token, position)
    weight = _weight(weight_text, token, position) if sep else 1.0
    return PValue(value=value, weight=weight, token=token, position=position)


def _check_p_id(value: str, token: str, position: int) -> None:
    if _PROFILE_ID.fullmatch(value):
        return
    if _ID_CHARS.fullmatch(value):
        why = f"a profile ID is at most 64 characters, got {len(value)}"
    elif value:
        why = f"{_P_VALUE_RULE}; separate several values with spaces"
    else:
        why = f"the value before '::' is missing; a value is {_P_VALUE_RULE}"
    raise PromptError(
        INVALID_PARAMETER, f"--p value {_quote(token)} is not valid: {why}", token, position
    )


def _weight(text: str, token: str, position: int) -> float:
    weight = float(text) if _WEIGHT.fullmatch(text) else math.nan
    if WEIGHT_MIN <= weight <= WEIGHT_MAX:
        return weight
    raise PromptError(
        INVALID_PARAMETER,
        f"--p weight in {_quote(token)} must be {_WEIGHT_RULE}, got {_quote('::' + text)}",
        token,
        position,
    )


def _single(
    prompt: str,
    flags: list[_Flag],
    params: tuple[Param, ...],
    name: str,
    convert: Callable[[Param, int], T],
) -> T | None:
    chosen: tuple[T, str] | None = None
    for index, param in enumerate(params):
        if param.name != name:
            continue
        position = _value_position(prompt, flags[index])
        value = convert(param, position)
        if chosen is None:
            chosen = (value, param.value)
        elif chosen[0] != value:
            _conflict(name, chosen[1], param, position)
    return None if chosen is None else chosen[0]


def _value_position(prompt: str, flag: _Flag) -> int:
    match = _TOKEN.search(prompt, flag.name_end, flag.value_end)
    return match.start() if match else flag.start


def _conflict(name: str, first: str, param: Param, position: int) -> None:
    raise PromptError(
        INVALID_PARAMETER,
        f"--{name} is given twice with different values: {_quote(first)} and {_quote(param.value)};"
        f" give --{name} once",
        param.value,
        position,
    )


def _stylize_value(param: Param, position: int) -> int:
    digits = param.value.lstrip("0") if _INTEGER.fullmatch(param.value) else None
    if digits is not None and len(digits) <= 4 and int(digits or "0") <= STYLIZE_MAX:
        return int(digits or "0")
    raise PromptError(
        INVALID_PARAMETER,
        f"--s must be an integer from {STYLIZE_MIN} to {STYLIZE_MAX}, got {_quote(param.value)}",
        param.value or param.raw_name,
        position if param.value else param.position,
    )


def _version_value(param: Param, position: int) -> str:
    if _VERSION.fullmatch(param.value):
        return param.value
    raise PromptError(
        INVALID_PARAMETER,
        f"--v must be a model version number such as 6, 6.1 or 7, got {_quote(param.value)}",
        param.value or param.raw_name,
        position if param.value else param.position,
    )


def _p_group(p_values: Sequence[str]) -> str:
    if isinstance(p_values, str):
        raise ValueError("p_values must be a sequence of tokens, not a single string")
    for token in p_values:
        try:
            _p_value(token, 0)
        except PromptError as error:
            raise ValueError(error.message) from None
        if _FLAG.match(token):
            raise ValueError(f"--p value {_quote(token)} would be read as a parameter")
    return " ".join(["--p", *p_values])


def _render_param(parsed: ParsedPrompt, param: Param, p_group: str | None) -> str | None:
    if param.name == "p":
        return p_group
    if param.name == "s":
        return f"--s {parsed.stylize}"
    if param.name == "v":
        return f"--v {parsed.version}"
    return f"--{param.name} {param.value}" if param.value else f"--{param.name}"
