"""The prompt grammar: ``--p`` / ``--s`` / ``--v`` parsing, canonical rewriting and strength."""

from shared.prompt.grammar import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_MAX_P_VALUES,
    INVALID_PARAMETER,
    MAX_STRENGTH,
    PROMPT_TOO_LONG,
    STYLIZE_DEFAULT,
    STYLIZE_MAX,
    STYLIZE_MIN,
    TOO_MANY_PROFILES,
    Param,
    ParsedPrompt,
    PromptError,
    PValue,
    parse_prompt,
    render_prompt,
    strength,
)

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_MAX_P_VALUES",
    "INVALID_PARAMETER",
    "MAX_STRENGTH",
    "PROMPT_TOO_LONG",
    "STYLIZE_DEFAULT",
    "STYLIZE_MAX",
    "STYLIZE_MIN",
    "TOO_MANY_PROFILES",
    "PValue",
    "Param",
    "ParsedPrompt",
    "PromptError",
    "parse_prompt",
    "render_prompt",
    "strength",
]
