"""The prompt grammar: examples for every rule, and Hypothesis properties over the grammar."""

from __future__ import annotations

import itertools
import pickle
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.prompt import (
    INVALID_PARAMETER,
    MAX_STRENGTH,
    PROMPT_TOO_LONG,
    TOO_MANY_PROFILES,
    ParsedPrompt,
    PromptError,
    parse_prompt,
    render_prompt,
    strength,
)
from shared.prompt.grammar import WEIGHT_MAX, WEIGHT_MIN

DASHES = ("--", "\u2014", "\u2013")
P_ALIASES = ("p", "personalize", "profile")
S_ALIASES = ("s", "stylize")
V_ALIASES = ("v", "version")
KNOWN = {*P_ALIASES, *S_ALIASES, *V_ALIASES}


def invalid(prompt: str, **limits: int) -> PromptError:
    with pytest.raises(PromptError) as caught:
        parse_prompt(prompt, **limits)
    return caught.value


def tokens_or_none(parsed: ParsedPrompt) -> list[str] | None:
    return [v.token for v in parsed.p_values] if parsed.personalize else None


def summary(parsed: ParsedPrompt) -> tuple[object, ...]:
    """What a canonical rewrite must keep: text, p values, stylize, version, unknown params."""
    return (
        parsed.text,
        tuple((v.value, v.weight, v.token) for v in parsed.p_values),
        parsed.stylize,
        parsed.version,
        tuple((p.name, p.value) for p in parsed.unknown_params),
    )


def has_flag(text: str) -> bool:
    """An independent statement of where flags start: a whitespace-separated word beginning
    with --, an em dash or an en dash, then an ASCII letter."""
    for word in text.split():
        body = word[2:] if word.startswith("--") else word[1:] if word[0] in "—–" else ""
        if body[:1].isascii() and body[:1].isalpha():
            return True
    return False


# ---------------------------------------------------------------- examples: the brief's prompts


def test_lighthouse_prompt() -> None:
    parsed = parse_prompt("a lighthouse at dusk --p --s 250 --v 7")
    assert parsed.text == "a lighthouse at dusk"
    assert parsed.personalize is True
    assert parsed.p_values == ()
    assert (parsed.stylize, parsed.stylize_explicit, parsed.version) == (250, True, "7")
    assert [(p.name, p.raw_name, p.value, p.position) for p in parsed.params] == [
        ("p", "--p", "", 21),
        ("s", "--s", "250", 25),
        ("v", "--v", "7", 33),
    ]


def test_cat_prompt_with_weights_unknowns_and_a_repeated_flag() -> None:
    prompt = "cat --p abc1234 q9z8x7w::0.5 --ar 16:9 --no trees, cars --personalize pf_xyz"
    parsed = parse_prompt(prompt)
    assert parsed.text == "cat"
    assert [(v.value, v.weight, v.token) for v in parsed.p_values] == [
        ("abc1234", 1.0, "abc1234"),
        ("q9z8x7w", 0.5, "q9z8x7w::0.5"),
        ("pf_xyz", 1.0, "pf_xyz"),
    ]
    assert [prompt.index(v.token) for v in parsed.p_values] == [v.position for v in parsed.p_values]
    assert [(p.name, p.value) for p in parsed.unknown_params] == [
        ("ar", "16:9"),
        ("no", "trees, cars"),
    ]
    assert [p.name for p in parsed.params] == ["p", "ar", "no", "p"]
    assert (parsed.stylize, parsed.stylize_explicit, parsed.version) == (100, False, None)


def test_prompt_without_parameters() -> None:
    parsed = parse_prompt("just a cat, nothing else")
    assert parsed == ParsedPrompt(
        text="just a cat, nothing else",
        params=(),
        personalize=False,
        p_values=(),
        stylize=100,
        stylize_explicit=False,
        version=None,
    )


def test_empty_prompt() -> None:
    assert parse_prompt("").text == ""
    assert parse_prompt("--p").text == ""


# ---------------------------------------------------------------- examples: flags


@pytest.mark.parametrize("alias", ["--p", "--personalize", "--profile", "--P", "--PersonaLize"])
def test_personalize_aliases_and_case(alias: str) -> None:
    parsed = parse_prompt(f"cat {alias} abc1234")
    assert parsed.personalize
    assert parsed.params[0].name == "p"
    assert parsed.params[0].raw_name == alias
    assert [v.value for v in parsed.p_values] == ["abc1234"]


@pytest.mark.parametrize("dash", ["\u2014", "\u2013"])
def test_em_and_en_dash_work_like_double_hyphen(dash: str) -> None:
    parsed = parse_prompt(f"cat {dash}p abc1234 {dash}Stylize 300 {dash}AR 3:2")
    assert parsed.params[0].raw_name == f"{dash}p"
    assert [v.value for v in parsed.p_values] == ["abc1234"]
    assert parsed.stylize == 300
    assert [(p.name, p.raw_name, p.value) for p in parsed.unknown_params] == [
        ("ar", f"{dash}AR", "3:2")
    ]


@pytest.mark.parametrize(
    "prompt",
    [
        "a well--known lighthouse",
        "rock—n—roll",
        "a–b testing",
        "pause — then go",
        "pause -- then go",
        "---p triple dash",
        "--1 numbered",
        "—é accent",
        "(--p) in brackets",
        "x--p glued",
    ],
)
def test_dashes_that_are_not_flags_stay_in_the_text(prompt: str) -> None:
    parsed = parse_prompt(prompt)
    assert parsed.text == prompt
    assert parsed.params == ()
    assert not parsed.personalize


def test_flag_inside_word_then_real_flag() -> None:
    parsed = parse_prompt("a well--known cat --s 20")
    assert parsed.text == "a well--known cat"
    assert parsed.stylize == 20


@pytest.mark.parametrize("sep", [" ", "\n", "\t", "\u00a0", "  \n "])
def test_any_whitespace_separates_flags(sep: str) -> None:
    parsed = parse_prompt(f"cat{sep}--s{sep}42{sep}--p{sep}abc1234")
    assert parsed.text == "cat"
    assert parsed.stylize == 42
    assert [v.value for v in parsed.p_values] == ["abc1234"]


def test_text_keeps_inner_and_leading_whitespace_and_drops_only_the_separator() -> None:
    assert parse_prompt("  two  spaces\tand tab \n --ar 1:1").text == "  two  spaces\tand tab"


def test_text_is_everything_before_the_first_flag_even_with_multiprompt_weights() -> None:
    parsed = parse_prompt("hot:: dog::2 —no ketchup")
    assert parsed.text == "hot:: dog::2"
    assert parsed.unknown_params[0].value == "ketchup"


@pytest.mark.parametrize("prompt", ["cat --s=250", "cat --ar16:9", "cat --p, abc1234", "cat --v7."])
def test_malformed_flag_is_an_error(prompt: str) -> None:
    error = invalid(prompt)
    assert error.code == INVALID_PARAMETER
    assert error.position == 4
    assert prompt.startswith(error.token, error.position)
    assert "malformed parameter" in error.message


def test_flag_names_may_contain_digits_hyphens_and_underscores() -> None:
    parsed = parse_prompt("cat --niji6 --style-raw yes --my_flag")
    assert [(p.name, p.value) for p in parsed.unknown_params] == [
        ("niji6", ""),
        ("style-raw", "yes"),
        ("my_flag", ""),
    ]


# ---------------------------------------------------------------- examples: --p values


def test_zero_values_means_use_defaults() -> None:
    parsed = parse_prompt("cat --p --ar 1:1")
    assert parsed.personalize
    assert parsed.p_values == ()


def test_no_p_flag_means_not_personalized() -> None:
    assert not parse_prompt("cat --s 50").personalize


def test_repeated_flags_add_values_in_order() -> None:
    prompt = "cat --p a --ar 1:1 --profile b::2 --P c"
    parsed = parse_prompt(prompt)
    assert [(v.value, v.weight) for v in parsed.p_values] == [("a", 1.0), ("b", 2.0), ("c", 1.0)]
    assert [v.position for v in parsed.p_values] == [8, 29, 38]
    assert [prompt[v.position :][: len(v.token)] for v in parsed.p_values] == ["a", "b::2", "c"]


@pytest.mark.parametrize(
    ("token", "weight"),
    [("x::2", 2.0), ("x::0.5", 0.5), ("x::1.25", 1.25), ("x::.5", 0.5), ("x::007", 7.0)],
)
def test_weights(token: str, weight: float) -> None:
    (value,) = parse_prompt(f"cat --p {token}").p_values
    assert (value.value, value.weight, value.token) == ("x", weight, token)


@pytest.mark.parametrize(
    ("value", "is_code"),
    [
        ("abc1234", True),
        ("0000000", True),
        ("ABC1234", False),
        ("abc123", False),
        ("abc12345", False),
        ("pf_xyz", False),
        ("a-b_c", False),
        ("p" * 64, False),
    ],
)
def test_codes_and_profile_ids(value: str, is_code: bool) -> None:
    (parsed,) = parse_prompt(f"cat --p {value}").p_values
    assert parsed.value == value
    assert parsed.looks_like_code is is_code


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("abc,", "separate several values with spaces"),
        ("a.b", "a code (7 lowercase letters or digits) or a profile ID"),
        ("é1234567", "a code (7 lowercase letters or digits) or a profile ID"),
        ("::2", "the value before '::' is missing"),
        ("p" * 65, "a profile ID is at most 64 characters, got 65"),
        ("abc::0", "must be a decimal number from 0.001 to 1000"),
        ("abc::0.0", "must be a decimal number from 0.001 to 1000"),
        ("abc::-1", "got '::-1'"),
        ("abc::", "got '::'"),
        ("abc::x", "got '::x'"),
        ("abc::inf", "got '::inf'"),
        ("abc::nan", "got '::nan'"),
        ("abc::1e3", "got '::1e3'"),
        ("abc::1::2", "got '::1::2'"),
        ("abc::" + "9" * 400, "must be a decimal number from 0.001 to 1000"),
        ("abc::٣", "got '::٣'"),
        ("—", "is not valid"),
    ],
)
def test_bad_p_values(token: str, fragment: str) -> None:
    prompt = f"cat --p abc1234 {token} --s 5"
    error = invalid(prompt)
    assert error.code == INVALID_PARAMETER
    assert (error.token, error.position) == (token, 16)
    assert fragment in error.message
    assert error.message.startswith("--p ")


# ---------------------------------------------------------------- examples: --s and --v


@pytest.mark.parametrize(
    ("param", "value"),
    [("--s 0", 0), ("--s 1000", 1000), ("--stylize 250", 250), ("--S 07", 7), ("—s 0000", 0)],
)
def test_stylize(param: str, value: int) -> None:
    parsed = parse_prompt(f"cat {param}")
    assert (parsed.stylize, parsed.stylize_explicit) == (value, True)


def test_stylize_default() -> None:
    parsed = parse_prompt("cat --p")
    assert (parsed.stylize, parsed.stylize_explicit) == (100, False)


def test_stylize_error_message() -> None:
    error = invalid("a cat --s 1200 --v 7")
    assert error.code == INVALID_PARAMETER
    assert error.message == "--s must be an integer from 0 to 1000, got '1200'"
    assert (error.token, error.position) == ("1200", 10)


@pytest.mark.parametrize(
    "value", ["1001", "-5", "1.5", "abc", "+5", "250 extra", "٣", "1_000", "9" * 5000]
)
def test_bad_stylize(value: str) -> None:
    error = invalid(f"cat --s {value}")
    assert error.code == INVALID_PARAMETER
    assert (error.token, error.position) == (value, 8)
    assert "from 0 to 1000" in error.message


@pytest.mark.parametrize("prompt", ["cat --s", "cat --s --v 7", "cat --s   \n"])
def test_missing_stylize_points_at_the_flag(prompt: str) -> None:
    error = invalid(prompt)
    assert (error.code, error.token, error.position) == (INVALID_PARAMETER, "--s", 4)
    assert "got nothing" in error.message


@pytest.mark.parametrize("version", ["5", "5.2", "6", "6.1", "7", "8", "8.1", "10.25"])
def test_versions(version: str) -> None:
    assert parse_prompt(f"cat --v {version}").version == version
    assert parse_prompt(f"cat --Version {version}").version == version


def test_version_default_is_none() -> None:
    assert parse_prompt("cat --p").version is None


@pytest.mark.parametrize("value", ["7a", "v7", "7.", ".7", "6.1.2", "seven", "7 raw", "٧"])
def test_bad_versions(value: str) -> None:
    error = invalid(f"cat --v {value}")
    assert (error.code, error.token, error.position) == (INVALID_PARAMETER, value, 8)
    assert "--v must be a model version number such as 6, 6.1 or 7" in error.message


def test_missing_version() -> None:
    error = invalid("cat --v --s 3")
    assert (error.code, error.token, error.position) == (INVALID_PARAMETER, "--v", 4)


@pytest.mark.parametrize(
    ("prompt", "token", "position"),
    [
        ("cat --s 100 --s 200", "200", 16),
        ("cat --v 7 --version 6", "6", 20),
        ("cat --v 7 --v 7.0", "7.0", 14),
    ],
)
def test_conflicting_duplicates_are_errors(prompt: str, token: str, position: int) -> None:
    error = invalid(prompt)
    assert (error.code, error.token, error.position) == (INVALID_PARAMETER, token, position)
    assert "given twice with different values" in error.message


def test_agreeing_duplicates_are_accepted() -> None:
    parsed = parse_prompt("cat --s 250 --stylize 0250 --v 7 --V 7")
    assert (parsed.stylize, parsed.version) == (250, "7")
    assert [p.name for p in parsed.params] == ["s", "s", "v", "v"]


# ---------------------------------------------------------------- examples: unknown parameters


def test_unknown_parameters_pass_through_in_order() -> None:
    prompt = "cat --ar 16:9 --no trees, cars  --chaos 20 --tile —Weird 5 --sref a.png::2 b.png"
    parsed = parse_prompt(prompt)
    assert [(p.name, p.value) for p in parsed.params] == [
        ("ar", "16:9"),
        ("no", "trees, cars"),
        ("chaos", "20"),
        ("tile", ""),
        ("weird", "5"),
        ("sref", "a.png::2 b.png"),
    ]
    assert [p.position for p in parsed.params] == [prompt.index(p.raw_name) for p in parsed.params]


def test_unknown_value_keeps_inner_whitespace() -> None:
    (param,) = parse_prompt("cat --no  red\n  cars \t").params
    assert param.value == "red\n  cars"


# ---------------------------------------------------------------- examples: limits


def test_prompt_length_limit() -> None:
    assert parse_prompt("x" * 6000).text == "x" * 6000
    assert parse_prompt("x" * 5990 + " --s 0100").stylize == 100
    error = invalid("x" * 5990 + " --s 12345678")
    assert (error.code, error.position) == (PROMPT_TOO_LONG, 6000)
    assert error.token == "678"
    assert "6003" in error.message and "6000" in error.message


def test_custom_length_limit() -> None:
    assert parse_prompt("abcd", max_length=4).text == "abcd"
    error = invalid("abcde", max_length=4)
    assert (error.code, error.token, error.position) == (PROMPT_TOO_LONG, "e", 4)


def test_length_is_checked_before_anything_else() -> None:
    assert invalid("--s 9999 " * 1000).code == PROMPT_TOO_LONG


def test_p_value_limit() -> None:
    ten = " ".join(f"id{i}" for i in range(10))
    assert len(parse_prompt(f"cat --p {ten}").p_values) == 10
    error = invalid(f"cat --p {ten} --p id10 id11")
    assert (error.code, error.token) == (TOO_MANY_PROFILES, "id10")
    assert error.position == len(f"cat --p {ten} --p ")
    assert "at most 10" in error.message and "got 12" in error.message


def test_custom_p_value_limit() -> None:
    assert parse_prompt("cat --p a b", max_p_values=2).p_values[1].value == "b"
    error = invalid("cat --p a b c", max_p_values=2)
    assert (error.code, error.token, error.position) == (TOO_MANY_PROFILES, "c", 12)
    assert invalid("cat --p a", max_p_values=0).code == TOO_MANY_PROFILES
    assert parse_prompt("cat --p", max_p_values=0).personalize


def test_negative_limits_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        parse_prompt("cat", max_length=-1)
    with pytest.raises(ValueError):
        parse_prompt("cat", max_p_values=-1)


def test_non_string_prompt_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_prompt(b"cat --p")  # type: ignore[arg-type]


# ---------------------------------------------------------------- examples: PromptError


def test_prompt_error_shape() -> None:
    error = PromptError(INVALID_PARAMETER, "bad", "tok", 3)
    assert isinstance(error, Exception)
    assert (error.code, error.message, error.token, error.position) == (
        INVALID_PARAMETER,
        "bad",
        "tok",
        3,
    )
    assert str(error) == "bad"
    assert error.to_dict() == {
        "code": INVALID_PARAMETER,
        "message": "bad",
        "token": "tok",
        "position": 3,
    }
    copy = pickle.loads(pickle.dumps(error))
    assert copy.to_dict() == error.to_dict()


def test_long_values_are_shortened_in_messages_but_not_in_token() -> None:
    error = invalid("cat --s " + "9" * 500)
    assert error.token == "9" * 500
    assert len(error.message) < 120


# ---------------------------------------------------------------- examples: render


def test_render_merges_p_flags_at_the_first_one_with_canonical_names() -> None:
    parsed = parse_prompt("cat —AR 16:9 --Personalize pid_1 --Stylize 0250 --profile b::2 --V 7")
    rendered = render_prompt(parsed, ["k3j9x2a", "q9z8x7w::0.5"])
    assert rendered == "cat --ar 16:9 --p k3j9x2a q9z8x7w::0.5 --s 250 --v 7"


def test_render_drops_the_p_group_when_none() -> None:
    parsed = parse_prompt("cat --p a --ar 1:1 --p b")
    assert render_prompt(parsed, None) == "cat --ar 1:1"


def test_render_appends_defaults_when_prompt_had_no_p() -> None:
    parsed = parse_prompt("cat --ar 1:1 --s 50")
    assert render_prompt(parsed, ["k3j9x2a"]) == "cat --ar 1:1 --s 50 --p k3j9x2a"
    assert render_prompt(parsed, None) == "cat --ar 1:1 --s 50"


def test_render_bare_p_and_empty_text() -> None:
    assert render_prompt(parse_prompt("  --p --tile"), []) == "--p --tile"
    assert render_prompt(parse_prompt(""), ["abc1234"]) == "--p abc1234"
    assert render_prompt(parse_prompt("cat \n"), None) == "cat"


def test_render_keeps_unknown_values_untouched() -> None:
    parsed = parse_prompt("cat --NO red,\n  blue --Tile")
    assert render_prompt(parsed, None) == "cat --no red,\n  blue --tile"


def test_profile_id_that_looks_like_a_flag_is_read_as_a_flag() -> None:
    parsed = parse_prompt("cat --p -x --abc")
    assert [v.value for v in parsed.p_values] == ["-x"]
    assert [p.name for p in parsed.unknown_params] == ["abc"]


def test_render_writes_stylize_and_version_once() -> None:
    parsed = parse_prompt("cat --s 5 --v 6.1 --s 005 --version 6.1")
    assert render_prompt(parsed, None) == "cat --s 5 --v 6.1"


@pytest.mark.parametrize(
    "bad", [["two words"], ["a --s 5"], ["a::0"], [""], ["ok", "--ar"], "abc1234"]
)
def test_render_rejects_invalid_p_tokens(bad: object) -> None:
    with pytest.raises(ValueError):
        render_prompt(parse_prompt("cat --p"), bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- examples: strength


def test_strength_anchor_points() -> None:
    assert strength(0) == 0.0
    assert strength(100) == 1.0
    assert strength(1000) == MAX_STRENGTH
    assert 3.4 < MAX_STRENGTH < 3.5


def test_strength_is_strictly_increasing_over_the_whole_range() -> None:
    values = [strength(s) for s in range(1001)]
    assert all(a < b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("bad", [-1, 1001, 2.5, True, "100"])
def test_strength_rejects_values_outside_the_range(bad: object) -> None:
    with pytest.raises(ValueError):
        strength(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- Hypothesis strategies

NOISY = "ab pPsSvV019:._,-—–\n\t\u00a0é"
noisy_text = st.text(alphabet=st.sampled_from(NOISY), max_size=80)
arbitrary_text = st.one_of(st.text(max_size=120), noisy_text)
separators = st.sampled_from([" ", "  ", "\n", "\t", " \n\t ", "\u00a0"])
dashes = st.sampled_from(DASHES)
free_text = st.one_of(st.text(max_size=60), noisy_text).filter(lambda t: not has_flag(t))


@st.composite
def cased(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c for c, f in zip(name, flips, strict=True))


@st.composite
def flag(draw: st.DrawFn, aliases: tuple[str, ...]) -> str:
    return draw(dashes) + draw(cased(draw(st.sampled_from(aliases))))


unknown_names = st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True).filter(
    lambda n: n not in KNOWN
)
unknown_values = st.one_of(
    st.just(""),
    st.lists(
        st.text(st.characters(exclude_categories=("Z", "Cc", "Cs")), min_size=1, max_size=8),
        max_size=4,
    )
    .map(" ".join)
    .filter(lambda v: not has_flag(v)),
)
p_tokens = st.builds(
    lambda value, weight: value + weight,
    st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    st.sampled_from(["", "::2", "::0.5", "::1.25", "::10", "::.75"]),
).filter(lambda token: not has_flag(token))


@dataclass
class Piece:
    """One generated parameter: how it is written, and what parsing must find."""

    written: str
    name: str
    value: str


@st.composite
def unknown_piece(draw: st.DrawFn) -> Piece:
    name, value = draw(unknown_names), draw(unknown_values)
    written = draw(dashes) + draw(cased(name)) + (draw(separators) + value if value else "")
    return Piece(written, name, value.strip())


@st.composite
def p_piece(draw: st.DrawFn) -> Piece:
    value = "".join(draw(separators) + t for t in draw(st.lists(p_tokens, max_size=3)))
    return Piece(draw(flag(P_ALIASES)) + value, "p", value.strip())


@st.composite
def prompts(draw: st.DrawFn) -> tuple[str, str, list[Piece], int | None, str | None]:
    """A valid prompt: free text, then unknown and --p parameters in any order, plus at most
    one --s and one --v (the same value may be repeated)."""
    text = draw(free_text)
    pieces = draw(st.lists(st.one_of(unknown_piece(), p_piece()), max_size=5))
    stylize = draw(st.none() | st.integers(0, 1000))
    version = draw(st.none() | st.from_regex(r"[0-9]{1,2}(\.[0-9])?", fullmatch=True))
    for name, value, aliases in (("s", stylize, S_ALIASES), ("v", version, V_ALIASES)):
        for _ in range(draw(st.integers(1, 2)) if value is not None else 0):
            at = draw(st.integers(0, len(pieces)))
            pieces.insert(at, Piece(f"{draw(flag(aliases))} {value}", name, str(value)))
    prompt = text
    for piece in pieces:
        prompt += draw(separators) + piece.written
    return prompt, text, pieces, stylize, version


# ---------------------------------------------------------------- Hypothesis properties


@settings(max_examples=400, deadline=None)
@given(arbitrary_text)
def test_parse_raises_only_prompt_error_pointing_at_its_token(prompt: str) -> None:
    try:
        parsed = parse_prompt(prompt, max_length=100, max_p_values=3)
    except PromptError as error:
        assert error.code in (INVALID_PARAMETER, PROMPT_TOO_LONG, TOO_MANY_PROFILES)
        assert 0 <= error.position <= len(prompt)
        assert prompt.startswith(error.token, error.position)
        assert error.message
        return
    assert prompt.startswith(parsed.text)
    assert len(parsed.p_values) <= 3


@settings(max_examples=150, deadline=None)
@given(dashes, st.sampled_from(["s", "v", "p", "ar"]), st.integers(-(10**80), 10**80))
def test_huge_and_negative_numbers_never_crash(dash: str, name: str, number: int) -> None:
    prompt = f"cat {dash}{name} {number} {dash}{name}::{number}"
    try:
        parse_prompt(prompt)
    except PromptError as error:
        assert prompt.startswith(error.token, error.position)


@given(free_text, st.lists(st.one_of(unknown_piece(), p_piece()), max_size=3), separators)
def test_text_is_preserved_exactly(text: str, pieces: list[Piece], sep: str) -> None:
    prompt = text + "".join(sep + p.written for p in pieces)
    assert parse_prompt(prompt).text == text.rstrip()


@given(free_text)
def test_text_without_flags_is_only_right_stripped(text: str) -> None:
    assert parse_prompt(text).text == text.rstrip()


@given(prompts())
def test_generated_prompts_parse_as_built(
    case: tuple[str, str, list[Piece], int | None, str | None],
) -> None:
    prompt, text, pieces, stylize, version = case
    parsed = parse_prompt(prompt, max_p_values=100)
    assert parsed.text == text.rstrip()
    assert [(p.name, p.value) for p in parsed.params] == [(p.name, p.value) for p in pieces]
    assert [prompt.startswith(p.raw_name, p.position) for p in parsed.params] == [True] * len(
        pieces
    )
    p_written = " ".join(p.value for p in pieces if p.name == "p").split()
    assert [v.token for v in parsed.p_values] == p_written
    assert all(prompt.startswith(v.token, v.position) for v in parsed.p_values)
    assert parsed.personalize == any(p.name == "p" for p in pieces)
    assert (parsed.stylize, parsed.stylize_explicit) == (
        100 if stylize is None else stylize,
        stylize is not None,
    )
    assert parsed.version == version


@given(prompts())
def test_unknown_params_round_trip_in_order(
    case: tuple[str, str, list[Piece], int | None, str | None],
) -> None:
    prompt, _, pieces, _, _ = case
    expected = [(p.name, p.value) for p in pieces if p.name not in ("p", "s", "v")]
    parsed = parse_prompt(prompt, max_p_values=100)
    assert [(p.name, p.value) for p in parsed.unknown_params] == expected
    rendered = parse_prompt(render_prompt(parsed, None), max_p_values=100)
    assert [(p.name, p.value) for p in rendered.unknown_params] == expected


@given(prompts())
def test_canonical_render_is_idempotent(
    case: tuple[str, str, list[Piece], int | None, str | None],
) -> None:
    parsed = parse_prompt(case[0], max_p_values=100)
    once = render_prompt(parsed, [v.token for v in parsed.p_values])
    reparsed = parse_prompt(once, max_p_values=100)
    assert summary(reparsed) == summary(parsed)
    assert render_prompt(reparsed, [v.token for v in reparsed.p_values]) == once


@settings(max_examples=300, deadline=None)
@given(arbitrary_text, st.booleans())
def test_any_parsable_prompt_renders_to_a_fixed_point(prompt: str, keep_p: bool) -> None:
    try:
        parsed = parse_prompt(prompt)
    except PromptError:
        return
    tokens = [v.token for v in parsed.p_values] if keep_p else tokens_or_none(parsed)
    once = render_prompt(parsed, tokens)
    reparsed = parse_prompt(once)
    assert summary(reparsed) == summary(parsed)
    assert render_prompt(reparsed, tokens) == once


@given(free_text.map(str.rstrip), flag(S_ALIASES), st.integers(0, 1000), st.integers(0, 3))
def test_stylize_in_range_always_parses(text: str, flag_: str, value: int, zeros: int) -> None:
    parsed = parse_prompt(f"{text} {flag_} {'0' * zeros}{value} --ar 2:3")
    assert (parsed.stylize, parsed.stylize_explicit) == (value, True)


@given(
    free_text.map(str.rstrip),
    flag(S_ALIASES),
    st.one_of(st.integers(max_value=-1), st.integers(min_value=1001)),
    separators,
)
def test_stylize_out_of_range_is_an_error_at_the_value(
    text: str, flag_: str, value: int, sep: str
) -> None:
    prefix = f"{text} --ar 1:1 {flag_}{sep}"
    error = invalid(f"{prefix}{value} --p")
    assert error.code == INVALID_PARAMETER
    assert (error.token, error.position) == (str(value), len(prefix))
    assert error.message == f"--s must be an integer from 0 to 1000, got '{value}'"


@given(prompts(), st.data())
def test_em_and_en_dashes_equal_double_hyphen(
    case: tuple[str, str, list[Piece], int | None, str | None], data: st.DataObject
) -> None:
    prompt = case[0]
    parsed = parse_prompt(prompt, max_p_values=100)
    swapped = prompt
    for param in reversed(parsed.params):
        dash = data.draw(dashes)
        old = 2 if param.raw_name.startswith("--") else 1
        swapped = swapped[: param.position] + dash + swapped[param.position + old :]
    other = parse_prompt(swapped, max_p_values=100)
    assert summary(other) == summary(parsed)
    assert [p.name for p in other.params] == [p.name for p in parsed.params]
    assert render_prompt(other, tokens_or_none(other)) == render_prompt(
        parsed, tokens_or_none(parsed)
    )


@given(st.integers(0, 1000), st.integers(0, 1000))
def test_strength_is_monotonic(a: int, b: int) -> None:
    assume(a != b)
    low, high = sorted((a, b))
    assert 0.0 == strength(0) <= strength(low) < strength(high) <= MAX_STRENGTH


# ---------------------------------------------------------------- --p weights: bounded


@pytest.mark.parametrize(
    "weight", ["1" + "0" * 200, "0." + "0" * 320 + "1", "1" * 400, "0.0009", "1000.5", "0"]
)
def test_weights_outside_the_range_are_refused_with_the_range(weight: str) -> None:
    token = f"abc1234::{weight}"
    error = invalid(f"cat --p {token}")
    assert (error.code, error.token, error.position) == (INVALID_PARAMETER, token, 8)
    assert "must be a decimal number from 0.001 to 1000" in error.message


@pytest.mark.parametrize(
    ("weight", "value"), [("0.001", 0.001), ("1000", 1000.0), ("1000.000", 1000.0), (".001", 0.001)]
)
def test_weights_at_the_bounds_are_accepted(weight: str, value: float) -> None:
    (parsed,) = parse_prompt(f"cat --p abc1234::{weight}").p_values
    assert parsed.weight == value


weight_texts = st.one_of(
    st.builds(
        lambda whole, point, fraction: whole + point + fraction,
        st.text("0123456789", min_size=1, max_size=300),
        st.sampled_from(["", "."]),
        st.text("0123456789", max_size=400),
    ).filter(lambda text: "." in text or not text.endswith(".")),
    st.floats(min_value=1e-6, max_value=1e6).map(lambda f: f"{f:.12f}"),
)


@settings(max_examples=300, deadline=None)
@given(weight_texts)
def test_a_weight_parses_exactly_when_it_lies_between_the_bounds(text: str) -> None:
    prompt = f"cat --p abc1234::{text} --s 5"
    if WEIGHT_MIN <= float(text) <= WEIGHT_MAX:
        (value,) = parse_prompt(prompt).p_values
        assert value.weight == float(text)
    else:
        error = invalid(prompt)
        assert (error.code, error.position) == (INVALID_PARAMETER, 8)
        assert "from 0.001 to 1000" in error.message
