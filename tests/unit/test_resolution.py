"""Rules 8-10: resolving ``--p`` into codes, one taste vector and a strength, or a clear error.

Each test goes through the steps the adapter takes: :func:`lookups` says what to fetch, only
that is fetched from a small store of read models, :func:`followups` what else tells whether
those codes' profiles were deleted, and :func:`resolve` decides with what came back.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.resolution import (
    ResolveResponse,
    deleted_profiles,
    followups,
    lookups,
    resolve,
)
from shared.domain.views import CodeView, MemberView, ProfileModel
from shared.prompt import parse_prompt, strength
from shared.prompt.grammar import WEIGHT_MAX, WEIGHT_MIN
from tests.unit.builders import code_view, member_view, summary, unit

NEEDED = {"v6": 3, "v7": 3}
E1, E2, E3, E4 = np.eye(4)

ALICE = member_view(
    "alice",
    summary("gv7", name="Global V7 Profile", is_global=True, latest_code="aaaaaa7"),
    summary("gv6", family="v6", version="6.1", is_global=True, latest_code="aaaaaa6"),
    summary("moody", name="Moody", latest_code="mmmmmm1"),
    summary("eight", version="8", latest_code="eeeeee8"),
)
BOB = member_view("bob", summary("pbob", is_global=True, latest_code="bbbbbbb"))
STORE = {
    view.code: view
    for view in (
        code_view("aaaaaa7", profile_id="gv7", vector=E1),
        code_view("aaaaaa6", profile_id="gv6", vector=E2, family="v6", version="6.1"),
        code_view("mmmmmm1", profile_id="moody", profile_name="Moody", vector=E3),
        code_view("eeeeee8", profile_id="eight", vector=E4, version="8"),
        code_view("ggggggg", profile_id="gone", profile_name="Old", vector=unit(1, 1, 0, 0)),
        code_view("bbbbbbb", profile_id="pbob", member_id="bob", vector=unit(0, 0, 1, 1)),
        code_view("bgone01", profile_id="pbob2", member_id="bob", vector=unit(0, 1, 1, 0)),
    )
}
MODELS = {
    "pbob": ProfileModel(profile_id="pbob", member_id="bob"),
    "gone": ProfileModel(
        profile_id="gone",
        member_id="alice",
        summary=summary("gone", name="Gone", deleted=True, latest_code="ggggggg"),
    ),
    "pbob2": ProfileModel(
        profile_id="pbob2", member_id="bob", summary=summary("pbob2", deleted=True)
    ),
}
VIEWS = {"alice": ALICE, "bob": BOB}


def run(
    prompt: str,
    member: MemberView | None = ALICE,
    member_id: str = "alice",
    store: dict[str, CodeView] = STORE,
) -> ResolveResponse:
    parsed = parse_prompt(prompt)
    wanted = lookups(parsed, member)
    codes = {c: store[c] for c in wanted.codes if c in store}
    models = {p: MODELS[p] for p in wanted.profiles if p in MODELS}
    more = followups(member_id, member, codes)
    owners = {m: VIEWS[m] for m in more.members if m in VIEWS}
    models |= {p: MODELS[p] for p in more.profiles if p in MODELS}
    foreign = {p: model.member_id for p, model in models.items()}
    deleted = deleted_profiles(member_id, codes, models, owners)
    return resolve(parsed, member_id, member, codes, foreign, deleted, NEEDED)


def vector_of(response: ResolveResponse) -> np.ndarray:
    assert response.vector is not None, response.error
    return np.array(response.vector)


def codes_of(response: ResolveResponse) -> list[str]:
    assert response.ok, response.error
    return [entry.code for entry in response.entries]


def refused(prompt: str, member: MemberView | None = ALICE) -> tuple[str, str, str, int]:
    response = run(prompt, member)
    assert not response.ok and response.error is not None
    error = response.error
    return error.code, error.message, error.token, error.position


def with_changes(**changes: object) -> MemberView:
    return ALICE.model_copy(update=changes)


def test_rule8_bare_p_applies_the_selected_defaults() -> None:
    response = run("a cat --p", with_changes(defaults=["moody", "gv6"]))
    assert codes_of(response) == ["mmmmmm1", "aaaaaa6"]
    assert {e.source for e in response.entries} == {"default"}
    assert response.prompt == "a cat --p mmmmmm1 aaaaaa6"
    assert np.allclose(vector_of(response), unit(0, 1, 1, 0))


def test_rule8_bare_p_without_defaults_applies_the_global_profile_of_the_prompts_family() -> None:
    assert codes_of(run("a cat --p")) == ["aaaaaa7"]
    assert codes_of(run("a cat --p --v 6")) == ["aaaaaa6"]
    assert codes_of(run("a cat --p", with_changes(default_version="6.1"))) == ["aaaaaa6"]


def test_rule8_defaults_that_cannot_serve_the_version_give_way_to_the_global_profile() -> None:
    assert codes_of(run("a cat --p --v 7", with_changes(defaults=["eight"]))) == ["aaaaaa7"]


def test_rule9_bare_p_with_a_locked_global_profile_says_how_many_picks_remain() -> None:
    locked = member_view("carol", summary("gc", name="Global V7 Profile", is_global=True, picks=1))
    code, message, token, position = refused("a cat --s 50 --personalize", locked)
    assert code == "PROFILE_LOCKED"
    assert "pick 2 more images" in message and "(1/3)" in message
    assert (token, position) == ("--personalize", 13)


def test_rule9_bare_p_before_any_pick_asks_for_the_whole_threshold() -> None:
    code, message, token, position = refused("a cat --p", member=None)
    assert code == "PROFILE_LOCKED"
    assert "pick 3 images" in message and "(0/3)" in message
    assert "Global V7 Profile" in message
    assert (token, position) == ("--p", 6)


def test_rule9_own_locked_profile_by_id_is_refused() -> None:
    member = with_changes(profiles={**ALICE.profiles, "new": summary("new", picks=0)})
    code, message, token, _ = refused("a cat --p new", member)
    assert (code, token) == ("PROFILE_LOCKED", "new")
    assert "pick 3 more images" in message


def test_rule9_unknown_code_is_refused_with_its_token_and_position() -> None:
    code, message, token, position = refused("a cat --p aaaaaa7 zzzzzzz::2")
    assert (code, token, position) == ("UNKNOWN_CODE", "zzzzzzz::2", 18)
    assert "no code 'zzzzzzz'" in message


def test_rule9_unknown_profile_id_is_refused() -> None:
    code, message, token, _ = refused("a cat --p p_nobody")
    assert (code, token) == ("UNKNOWN_CODE", "p_nobody")
    assert "no profile ID 'p_nobody'" in message


def test_rule8_another_members_profile_id_is_not_usable() -> None:
    code, message, token, position = refused("a cat --p pbob")
    assert (code, token, position) == ("NOT_OWNER", "pbob", 10)
    assert "another member" in message


def test_rule8_another_members_code_is_usable_and_hides_their_profile() -> None:
    response = run("a cat --p bbbbbbb")
    [entry] = response.entries
    assert (entry.code, entry.source, entry.profile_id, entry.profile_name) == (
        "bbbbbbb",
        "code",
        None,
        None,
    )
    assert np.allclose(vector_of(response), unit(0, 0, 1, 1))


def test_rule8_own_code_names_its_profile() -> None:
    [entry] = run("a cat --p mmmmmm1").entries
    assert (entry.source, entry.profile_id, entry.profile_name) == ("code", "moody", "Moody")


def test_rule9_v7_code_in_a_v6_prompt_is_a_version_mismatch() -> None:
    code, message, token, position = refused("a cat --p aaaaaa7 --v 6")
    assert (code, token, position) == ("VERSION_MISMATCH", "aaaaaa7", 10)
    assert "--v 6" in message


def test_rule1_v6_code_serves_a_v7_prompt() -> None:
    response = run("a cat --p aaaaaa6 --v 7")
    assert codes_of(response) == ["aaaaaa6"]
    assert (response.family, response.version) == ("v7", "7")


@pytest.mark.parametrize("value", ["eeeeee8", "eight"], ids=["code", "profile"])
def test_rule1_v7_profile_made_at_8_refuses_7_and_serves_8_1(value: str) -> None:
    assert refused(f"a cat --p {value} --v 7")[0] == "VERSION_MISMATCH"
    assert codes_of(run(f"a cat --p {value} --v 8.1")) == ["eeeeee8"]


def test_rule9_version_without_personalization_is_a_version_mismatch() -> None:
    code, message, token, position = refused("a cat --v 5.2 --p")
    assert (code, token, position) == ("VERSION_MISMATCH", "--v 5.2", 6)
    assert "5.2" in message and "6.1" in message


def test_rule9_default_version_without_personalization_is_a_version_mismatch() -> None:
    code, _, token, position = refused("a cat --p", with_changes(default_version="5.2"))
    assert (code, token, position) == ("VERSION_MISMATCH", "", -1)


def test_rule8_several_values_combine_into_the_normalised_weighted_sum() -> None:
    response = run("a cat --p aaaaaa7::2 moody::0.5 bbbbbbb")
    expected = 2 * E1 + 0.5 * E3 + unit(0, 0, 1, 1)
    assert [e.weight for e in response.entries] == [2.0, 0.5, 1.0]
    assert np.allclose(vector_of(response), expected / np.linalg.norm(expected))
    assert np.linalg.norm(vector_of(response)) == pytest.approx(1.0)
    assert response.prompt == "a cat --p aaaaaa7::2 mmmmmm1::0.5 bbbbbbb"


@pytest.mark.parametrize(("stylize", "expected"), [(0, 0.0), (100, 1.0), (1000, strength(1000))])
def test_rule10_stylize_sets_the_strength(stylize: int, expected: float) -> None:
    response = run(f"a cat --p --s {stylize}")
    assert (response.stylize, response.strength) == (stylize, pytest.approx(expected))
    assert codes_of(response) == ["aaaaaa7"]


def test_rule10_higher_stylize_applies_more() -> None:
    strengths = [run(f"a cat --p --s {s}").strength for s in (0, 50, 100, 250, 1000)]
    assert strengths == sorted(set(strengths))  # type: ignore[type-var]


def test_rule8_personalization_switched_on_adds_the_defaults_to_every_prompt() -> None:
    member = with_changes(personalization=True, defaults=["moody"])
    response = run("a cat --ar 2:3", member)
    assert codes_of(response) == ["mmmmmm1"]
    assert response.prompt == "a cat --ar 2:3 --p mmmmmm1"
    assert response.strength == 1.0


def test_rule8_without_p_and_switched_off_nothing_is_applied() -> None:
    response = run("a cat --ar 2:3 --s 400")
    assert response.ok
    assert (response.entries, response.vector, response.strength) == ([], None, 0.0)
    assert (response.prompt, response.stylize) == ("a cat --ar 2:3 --s 400", 400)


def test_rule6_deleted_own_profile_id_is_refused_but_its_codes_keep_working() -> None:
    code, message, token, _ = refused("a cat --p gone")
    assert (code, token) == ("PROFILE_DELETED", "gone")
    assert "its codes keep working" in message
    response = run("a cat --p ggggggg")
    assert codes_of(response) == ["ggggggg"]
    assert response.warnings == ["code ggggggg comes from a deleted profile; it keeps working"]
    assert response.entries[0].profile_name == "Gone", "the name it had when it was deleted"


def test_rule6_a_shared_code_of_a_deleted_profile_keeps_working_with_a_warning() -> None:
    response = run("a cat --p bgone01 bbbbbbb")
    assert codes_of(response) == ["bgone01", "bbbbbbb"]
    assert response.warnings == ["code bgone01 comes from a deleted profile; it keeps working"]
    assert [e.profile_name for e in response.entries] == [None, None]


def test_followups_ask_for_other_owners_views_and_own_inactive_profiles() -> None:
    codes = {c: STORE[c] for c in ("aaaaaa7", "ggggggg", "bbbbbbb", "bgone01")}
    wanted = followups("alice", ALICE, codes)
    assert (wanted.codes, wanted.profiles, wanted.members) == (set(), {"gone"}, {"bob"})
    assert followups("alice", ALICE, {"aaaaaa7": STORE["aaaaaa7"]}) == type(wanted)()


def test_a_shared_codes_profile_is_deleted_when_its_owner_no_longer_has_it() -> None:
    codes = {c: STORE[c] for c in ("bbbbbbb", "bgone01")}
    assert deleted_profiles("alice", codes, {}, {"bob": BOB}) == {"pbob2": None}
    assert deleted_profiles("alice", codes, {}, {}) == {}, "without the owner's view: unknown"


def test_own_profile_created_after_her_view_was_read_is_not_called_deleted() -> None:
    fresh = {"pnew": ProfileModel(profile_id="pnew", member_id="alice")}
    parsed = parse_prompt("a cat --p pnew")
    response = resolve(parsed, "alice", ALICE, {}, {"pnew": "alice"}, {}, NEEDED)
    assert response.error is not None and response.error.code == "PROFILE_LOCKED"
    assert "just created" in response.error.message
    assert deleted_profiles("alice", {}, fresh, {}) == {}


def test_rule8_profile_ids_are_rewritten_to_codes_and_other_parameters_kept() -> None:
    response = run("a cat --AR 16:9 --profile moody gv6::0.5 --chaos 20 --V 7 --p bbbbbbb")
    assert response.prompt == "a cat --ar 16:9 --p mmmmmm1 aaaaaa6::0.5 bbbbbbb --chaos 20 --v 7"
    assert [e.source for e in response.entries] == ["profile", "profile", "code"]
    assert codes_of(run(response.prompt)) == ["mmmmmm1", "aaaaaa6", "bbbbbbb"]


def test_lookups_fetch_latest_codes_of_own_profiles_and_other_values_by_shape() -> None:
    wanted = lookups(parse_prompt("a cat --p moody bbbbbbb pbob gone"), ALICE)
    assert wanted.codes == {"mmmmmm1", "bbbbbbb"}
    assert wanted.profiles == {"pbob", "gone"}, "a deleted profile is not in her view"


def test_lookups_for_bare_p_fetch_every_latest_code() -> None:
    member = with_changes(profiles={**ALICE.profiles, "new": summary("new", picks=0)})
    wanted = lookups(parse_prompt("a cat --p"), member)
    assert wanted.codes == {"aaaaaa7", "aaaaaa6", "mmmmmm1", "eeeeee8"}
    assert wanted.profiles == set()


def test_lookups_for_an_unknown_member_fetch_only_what_the_prompt_names() -> None:
    wanted = lookups(parse_prompt("a cat --p bbbbbbb pbob"), None)
    assert (wanted.codes, wanted.profiles) == ({"bbbbbbb"}, {"pbob"})


@pytest.mark.parametrize("weight", ["0.001", "1000", "0.0123"])
def test_rule8_extreme_weights_are_rewritten_as_plain_decimals(weight: str) -> None:
    response = run(f"a cat --p aaaaaa7 mmmmmm1::{weight}")
    assert response.prompt == f"a cat --p aaaaaa7 mmmmmm1::{weight}"


def test_rule8_rewritten_prompt_keeps_the_weight_that_was_applied() -> None:
    first = run("a cat --p aaaaaa7 mmmmmm1::0.1234567")
    again = run(first.prompt or "")
    assert first.prompt == "a cat --p aaaaaa7 mmmmmm1::0.1234567"
    assert again.vector == first.vector
    assert again.prompt == first.prompt


def test_rule9_locked_message_without_thresholds_names_no_none() -> None:
    response = resolve(parse_prompt("a cat --p"), "carol", None, {}, {})
    assert response.error is not None and response.error.code == "PROFILE_LOCKED"
    assert "None" not in response.error.message


def test_switched_on_personalization_never_blocks_a_prompt_without_p() -> None:
    locked = member_view("lee", summary("glee", is_global=True), personalization=True)
    response = run("a quiet street --ar 2:3", locked, member_id="lee")
    assert response.ok and response.entries == [] and response.strength == 0.0
    assert response.prompt == "a quiet street --ar 2:3"
    assert response.warnings and "not applied" in response.warnings[0]
    assert run("a quiet street --p", locked, member_id="lee").error is not None


def test_an_owner_sees_the_current_name_of_a_codes_profile() -> None:
    renamed = with_changes(
        profiles={
            **ALICE.profiles,
            "moody": ALICE.profiles["moody"].model_copy(update={"name": "Calm"}),
        }
    )
    response = run("a cat --p mmmmmm1", renamed)
    assert response.entries[0].profile_name == "Calm"


def test_an_unlocked_profile_whose_first_code_is_still_being_minted_says_so() -> None:
    fresh = member_view("fay", summary("gfay", is_global=True, picks=3))
    response = run("a cat --p", fresh, member_id="fay")
    assert response.error is not None and response.error.code == "CODE_PENDING"
    assert "try again in a moment" in response.error.message


OPPOSITE = {
    "uuuuuu1": code_view("uuuuuu1", profile_id="pbob", member_id="bob", vector=unit(1, 2, 0, 0)),
    "uuuuuu2": code_view("uuuuuu2", profile_id="pbob", member_id="bob", vector=unit(-1, -2, 0, 0)),
}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted({*STORE, *OPPOSITE})),
            st.floats(min_value=WEIGHT_MIN, max_value=WEIGHT_MAX),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_rule8_any_weights_in_range_give_a_unit_vector_or_say_they_cancel(
    values: list[tuple[str, float]],
) -> None:
    prompt = "a cat --v 8 --p " + " ".join(
        f"{c}::{np.format_float_positional(w)}" for c, w in values
    )
    response = resolve(parse_prompt(prompt), "alice", ALICE, {**STORE, **OPPOSITE}, {})
    if response.ok:
        vector = vector_of(response)
        assert np.isfinite(vector).all()
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-12)
    else:
        assert response.error is not None
        assert response.error.code == "INVALID_PARAMETER"
        assert "cancel out" in response.error.message


def test_rule8_the_smallest_and_largest_weights_still_give_a_unit_vector() -> None:
    response = run("a cat --p aaaaaa7::0.001 mmmmmm1::1000")
    assert np.linalg.norm(vector_of(response)) == pytest.approx(1.0)
    assert np.allclose(vector_of(response), unit(1e-6, 0, 1, 0))


@pytest.mark.parametrize(
    "values", ["uuuuuu1 uuuuuu2", "uuuuuu1::2.5 uuuuuu2::2.5", "uuuuuu1::0.3 uuuuuu2::.3"]
)
def test_rule9_codes_whose_weights_cancel_out_are_refused(values: str) -> None:
    parsed = parse_prompt(f"a cat --p {values}")
    response = resolve(parsed, "alice", ALICE, OPPOSITE, {}, needed=NEEDED)
    assert not response.ok and response.error is not None and response.vector is None
    assert response.error.code == "INVALID_PARAMETER"
    assert "cancel out" in response.error.message and values.split()[0] in response.error.message
    assert (response.error.token, response.error.position) == ("--p", 6)


def test_rule9_codes_that_nearly_cancel_still_have_a_direction() -> None:
    parsed = parse_prompt("a cat --p uuuuuu1::1.001 uuuuuu2")
    response = resolve(parsed, "alice", ALICE, OPPOSITE, {}, needed=NEEDED)
    assert np.allclose(vector_of(response), unit(1, 2, 0, 0))


def test_switched_on_defaults_that_cancel_out_leave_the_prompt_unpersonalized() -> None:
    member = member_view(
        "bob",
        summary("pbob", is_global=True, latest_code="uuuuuu1"),
        summary("pbob2", latest_code="uuuuuu2"),
        defaults=["pbob", "pbob2"],
        personalization=True,
    )
    response = resolve(parse_prompt("a cat"), "bob", member, OPPOSITE, {}, needed=NEEDED)
    assert response.ok and response.vector is None and response.strength == 0.0
    assert "cancel out" in response.warnings[0]
