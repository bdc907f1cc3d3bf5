"""selection-ingest's member aggregate: what ``decide`` accepts, derives and rejects (rules 1-6)."""

from __future__ import annotations

import pytest

from shared.domain import events as ev
from shared.domain.member import MAX_PROFILES, Context, MemberState, Rules, decide, evolve
from tests.unit.builders import DIM, V6_IMAGES, V7_IMAGES, Journal


@pytest.fixture
def alice() -> Journal:
    return Journal()


@pytest.fixture
def unlocked(alice: Journal) -> Journal:
    alice.unlock_global()
    return alice


def test_rule1_first_grid_creates_the_global_profile_of_the_default_family(alice: Journal) -> None:
    appended = alice.send(ev.GridServed(grid_id="g1", image_ids=["r1", "r2"]))
    assert appended == [
        ev.ProfileCreated(
            name="Global V7 Profile", profile_id="prof1", family="v7", version="7", is_global=True
        ),
        ev.GridServed(grid_id="g1", image_ids=["r1", "r2"], profile_id="prof1"),
    ]
    assert alice.state.globals == {"v7": "prof1"}


def test_rule1_one_global_profile_per_family(alice: Journal) -> None:
    alice.grid("g1", ["r1", "r2"])
    assert alice.send(ev.GridServed(grid_id="g2", image_ids=["r3", "r4"])) == [
        ev.GridServed(grid_id="g2", image_ids=["r3", "r4"], profile_id="prof1")
    ]
    alice.send(ev.DefaultVersionSet(version="6"))
    assert alice.grid("g3", ["s1", "s2"]) == "prof2"
    assert alice.state.globals == {"v7": "prof1", "v6": "prof2"}
    assert alice.state.profiles["prof2"].version == "6.1"


def test_rule3_pick_is_enriched_with_the_grid_profile_and_remaining_candidates(
    alice: Journal,
) -> None:
    alice.grid("g1", ["r1", "r2", "r3"])
    first = alice.send(ev.ImagePicked(grid_id="g1", image_id="r2"))
    second = alice.send(ev.ImagePicked(grid_id="g1", image_id="r3"))
    assert first == [
        ev.ImagePicked(
            grid_id="g1", image_id="r2", profile_id="prof1", candidates=["r1", "r2", "r3"]
        )
    ]
    assert second == [
        ev.ImagePicked(grid_id="g1", image_id="r3", profile_id="prof1", candidates=["r1", "r3"])
    ]
    assert alice.state.profiles["prof1"].ratings == 2


def test_rule3_picking_the_same_image_twice_is_ignored(alice: Journal) -> None:
    alice.grid("g1", ["r1", "r2"])
    alice.pick("g1", "r1")
    version = alice.state.version
    assert alice.send(ev.ImagePicked(grid_id="g1", image_id="r1")) == []
    assert alice.state.version == version
    assert alice.state.profiles["prof1"].ratings == 1


def test_rule3_pick_from_a_grid_never_served_is_rejected(alice: Journal) -> None:
    error = alice.reject(ev.ImagePicked(grid_id="nope", image_id="r1"))
    assert (error.code, error.field) == ("UNKNOWN_GRID", "payload.grid_id")
    assert "'nope'" in error.message


def test_rule3_pick_of_an_image_not_in_the_grid_is_rejected(alice: Journal) -> None:
    alice.grid("g1", ["r1", "r2"])
    error = alice.reject(ev.ImagePicked(grid_id="g1", image_id="r3"))
    assert (error.code, error.field) == ("NOT_IN_GRID", "payload.image_id")
    assert "'r3'" in error.message and "'g1'" in error.message


def test_rule3_picks_from_a_grid_served_for_a_named_profile_feed_that_profile(
    unlocked: Journal,
) -> None:
    [created] = unlocked.send(ev.ProfileCreated(name="Moody"))
    assert isinstance(created, ev.ProfileCreated) and created.profile_id is not None
    unlocked.grid("g2", ["r4", "r5"], profile_id=created.profile_id)
    unlocked.pick("g2", "r5")
    assert unlocked.log[-1].payload["profile_id"] == created.profile_id
    assert unlocked.state.profiles[created.profile_id].ratings == 1
    assert unlocked.state.profiles["prof1"].ratings == 3


def test_grid_with_an_unregistered_image_is_rejected(alice: Journal) -> None:
    error = alice.reject(ev.GridServed(grid_id="g1", image_ids=["r1", "ghost"]))
    assert (error.code, error.field) == ("UNKNOWN_IMAGE", "payload.image_ids")


def test_grid_served_twice_is_rejected(alice: Journal) -> None:
    alice.grid("g1", ["r1", "r2"])
    assert alice.reject(ev.GridServed(grid_id="g1", image_ids=["r3", "r4"])).code == (
        "DUPLICATE_GRID"
    )


def test_grid_for_another_members_profile_is_rejected(alice: Journal) -> None:
    error = alice.reject(ev.GridServed(grid_id="g1", image_ids=["r1", "r2"], profile_id="bobs"))
    assert (error.code, error.field) == ("NOT_OWNER", "payload.profile_id")


def test_grids_kept_bounds_the_open_grids_and_forgets_the_oldest() -> None:
    alice = Journal(rules=Rules(unlock={"v6": 3, "v7": 3}, embed_dim=DIM, grids_kept=2))
    for grid_id in ("g1", "g2", "g3"):
        alice.grid(grid_id, ["r1", "r2"])
    assert list(alice.state.grids) == ["g2", "g3"]
    assert alice.reject(ev.ImagePicked(grid_id="g1", image_id="r1")).code == "UNKNOWN_GRID"


def test_rule4_likes_of_own_images_are_ignored(alice: Journal) -> None:
    assert alice.send(ev.ImageLiked(image_id="own")) == []
    assert alice.state.profiles == {}


def test_rule4_like_feeds_the_global_profile_of_the_images_family(alice: Journal) -> None:
    alice.grid("g1", ["r1", "r2"])
    appended = alice.send(ev.ImageLiked(image_id="s1"))
    assert appended == [
        ev.ProfileCreated(
            name="Global V6 Profile", profile_id="prof2", family="v6", version="6.1", is_global=True
        ),
        ev.ImageLiked(image_id="s1", profile_id="prof2"),
    ]
    assert alice.send(ev.ImageLiked(image_id="r3")) == [
        ev.ImageLiked(image_id="r3", profile_id="prof1")
    ]


def test_rule4_liking_twice_is_ignored(alice: Journal) -> None:
    alice.send(ev.ImageLiked(image_id="r1"))
    assert alice.send(ev.ImageLiked(image_id="r1")) == []


def test_rule4_likes_do_not_count_towards_unlocking(alice: Journal) -> None:
    for image in V7_IMAGES:
        alice.send(ev.ImageLiked(image_id=image))
    assert alice.state.profiles["prof1"].ratings == 0


def test_rule1_like_of_an_image_without_personalization_is_ignored(alice: Journal) -> None:
    assert alice.send(ev.ImageLiked(image_id="old")) == []


def test_rule4_unlike_without_a_like_is_ignored(alice: Journal) -> None:
    assert alice.send(ev.ImageUnliked(image_id="r1")) == []


def test_rule4_unlike_takes_back_a_like_from_the_same_profile(alice: Journal) -> None:
    alice.send(ev.ImageLiked(image_id="s1"))
    assert alice.send(ev.ImageUnliked(image_id="s1")) == [
        ev.ImageUnliked(image_id="s1", profile_id="prof1")
    ]
    assert alice.state.liked == []
    assert alice.send(ev.ImageUnliked(image_id="s1")) == []


def test_like_of_an_unregistered_image_is_rejected(alice: Journal) -> None:
    error = alice.reject(ev.ImageLiked(image_id="ghost"))
    assert (error.code, error.field) == ("UNKNOWN_IMAGE", "payload.image_id")


def test_rule4_ranked_pair_feeds_the_global_profile_and_counts_towards_unlocking(
    alice: Journal,
) -> None:
    appended = alice.send(ev.PairRanked(winner_image_id="s1", loser_image_id="s2"))
    assert appended[-1] == ev.PairRanked(
        winner_image_id="s1", loser_image_id="s2", profile_id="prof1"
    )
    assert alice.state.globals == {"v6": "prof1"}
    assert alice.state.profiles["prof1"].ratings == 1


def test_rule4_pair_of_mixed_families_is_rejected(alice: Journal) -> None:
    error = alice.reject(ev.PairRanked(winner_image_id="r1", loser_image_id="s1"))
    assert (error.code, error.field) == ("VERSION_MISMATCH", "payload.loser_image_id")
    assert "v7" in error.message and "v6" in error.message


def test_rule4_pair_of_one_image_is_rejected(alice: Journal) -> None:
    error = alice.reject(ev.PairRanked(winner_image_id="r1", loser_image_id="r1"))
    assert error.code == "INVALID_FIELD"


def test_rule5_profile_created_only_after_global_unlocked(alice: Journal) -> None:
    alice.grid("g1", ["r1", "r2", "r3"])
    alice.pick("g1", "r1")
    error = alice.reject(ev.ProfileCreated(name="Moody"))
    assert (error.code, error.field) == ("PROFILE_LOCKED", "type")
    assert "pick 2 more" in error.message
    assert "Global V7 Profile" in error.message


def test_rule5_profile_created_before_any_global_asks_for_every_pick(alice: Journal) -> None:
    assert "pick 3 more" in alice.reject(ev.ProfileCreated(name="Moody")).message


def test_rule5_profile_created_after_unlock_takes_default_version_and_family(
    unlocked: Journal,
) -> None:
    assert unlocked.send(ev.ProfileCreated(name="Moody")) == [
        ev.ProfileCreated(
            name="Moody", profile_id="prof2", family="v7", version="7", is_global=False
        )
    ]


def test_rule5_inbound_cannot_choose_id_family_or_global_flag(unlocked: Journal) -> None:
    smuggled = ev.ProfileCreated(
        name="Sneaky", profile_id="prof1", family="v6", version="6", is_global=True
    )
    [created] = unlocked.send(smuggled)
    assert created == ev.ProfileCreated(
        name="Sneaky", profile_id="prof2", family="v7", version="7", is_global=False
    )
    assert unlocked.state.globals == {"v7": "prof1"}


def test_rule5_default_version_set_then_profile_created_takes_that_version(
    unlocked: Journal,
) -> None:
    unlocked.send(ev.DefaultVersionSet(version="8.1"))
    [created] = unlocked.send(ev.ProfileCreated(name="Eight"))
    assert isinstance(created, ev.ProfileCreated)
    assert (created.family, created.version) == ("v7", "8.1")


def test_rule5_v6_default_needs_the_v6_global_unlocked(unlocked: Journal) -> None:
    unlocked.send(ev.DefaultVersionSet(version="6"))
    error = unlocked.reject(ev.ProfileCreated(name="Retro"))
    assert error.code == "PROFILE_LOCKED"
    assert "Global V6 Profile" in error.message
    unlocked.grid("g6", V6_IMAGES)
    unlocked.pick("g6", *V6_IMAGES[:3])
    [created] = unlocked.send(ev.ProfileCreated(name="Retro"))
    assert isinstance(created, ev.ProfileCreated)
    assert (created.family, created.version, created.is_global) == ("v6", "6", False)


def test_rule1_default_version_without_personalization_refuses_new_profiles(
    unlocked: Journal,
) -> None:
    unlocked.send(ev.DefaultVersionSet(version="5.2"))
    error = unlocked.reject(ev.ProfileCreated(name="Old"))
    assert (error.code, error.field) == ("VERSION_MISMATCH", "default_version")


def test_rule5_each_profile_has_a_unique_id(unlocked: Journal) -> None:
    for name in ("A", "B", "C"):
        unlocked.send(ev.ProfileCreated(name=name))
    assert sorted(unlocked.state.profiles) == ["prof1", "prof2", "prof3", "prof4"]


def test_rule5_rename_keeps_the_id(unlocked: Journal) -> None:
    unlocked.send(ev.ProfileCreated(name="Moody"))
    unlocked.send(ev.ProfileRenamed(profile_id="prof2", name="Bright"))
    renamed = unlocked.state.profiles["prof2"]
    assert (renamed.profile_id, renamed.name) == ("prof2", "Bright")


def test_rule5_rename_of_a_foreign_profile_is_rejected(alice: Journal) -> None:
    assert alice.reject(ev.ProfileRenamed(profile_id="bobs", name="Mine now")).code == "NOT_OWNER"


@pytest.mark.parametrize(
    "payload",
    [ev.ProfileRenamed(profile_id="bobs", name="Mine now"), ev.ProfileDeleted(profile_id="bobs")],
    ids=["renamed", "deleted"],
)
def test_rejection_of_a_foreign_profile_names_the_payload_field(
    alice: Journal, payload: ev.Payload
) -> None:
    assert alice.reject(payload).field == "payload.profile_id"


def test_rule5_global_profile_cannot_be_deleted(unlocked: Journal) -> None:
    error = unlocked.reject(ev.ProfileDeleted(profile_id="prof1"))
    assert (error.code, error.field) == ("GLOBAL_PROFILE", "payload.profile_id")


def test_rule6_deleting_twice_is_ignored(unlocked: Journal) -> None:
    unlocked.send(ev.ProfileCreated(name="Moody"))
    assert unlocked.send(ev.ProfileDeleted(profile_id="prof2")) == [
        ev.ProfileDeleted(profile_id="prof2")
    ]
    assert unlocked.send(ev.ProfileDeleted(profile_id="prof2")) == []


def test_rule6_deleted_profile_refuses_picks_from_grids_served_for_it(unlocked: Journal) -> None:
    unlocked.send(ev.ProfileCreated(name="Moody"))
    unlocked.grid("g2", ["r4", "r5"], profile_id="prof2")
    unlocked.send(ev.ProfileDeleted(profile_id="prof2"))
    error = unlocked.reject(ev.ImagePicked(grid_id="g2", image_id="r4"))
    assert (error.code, error.field) == ("PROFILE_DELETED", "payload.grid_id")


def test_rule6_deleted_profile_refuses_new_grids(unlocked: Journal) -> None:
    unlocked.send(ev.ProfileCreated(name="Moody"))
    unlocked.send(ev.ProfileDeleted(profile_id="prof2"))
    error = unlocked.reject(ev.GridServed(grid_id="g2", image_ids=["r4", "r5"], profile_id="prof2"))
    assert (error.code, error.field) == ("PROFILE_DELETED", "payload.profile_id")


def test_rule6_deleted_profile_leaves_the_defaults(unlocked: Journal) -> None:
    unlocked.send(ev.ProfileCreated(name="Moody"))
    unlocked.send(ev.DefaultProfilesSelected(profile_ids=["prof1", "prof2"]))
    unlocked.send(ev.ProfileDeleted(profile_id="prof2"))
    assert unlocked.state.defaults == ["prof1"]


def test_rule8_default_profiles_must_be_own(unlocked: Journal) -> None:
    error = unlocked.reject(ev.DefaultProfilesSelected(profile_ids=["prof1", "bobs"]))
    assert (error.code, error.field) == ("NOT_OWNER", "payload.profile_ids")


def test_rule8_deleted_profile_cannot_become_a_default(unlocked: Journal) -> None:
    unlocked.send(ev.ProfileCreated(name="Moody"))
    unlocked.send(ev.ProfileDeleted(profile_id="prof2"))
    assert unlocked.reject(ev.DefaultProfilesSelected(profile_ids=["prof2"])).code == (
        "PROFILE_DELETED"
    )


def test_rule8_settings_are_accepted_as_they_are(alice: Journal) -> None:
    alice.send(ev.PersonalizationToggled(enabled=True))
    alice.send(ev.DefaultVersionSet(version="6.1"))
    assert (alice.state.personalization, alice.state.default_version) == (True, "6.1")


def test_image_registered_needs_the_systems_embedding_size(alice: Journal) -> None:
    payload = ev.ImageRegistered(image_id="new", model_version="7", embedding=[1.0, 0.0])
    error = alice.reject(payload)
    assert (error.code, error.field) == ("INVALID_FIELD", "payload.embedding")
    assert f"uses {DIM}" in error.message


def test_image_registered_twice_is_rejected(alice: Journal) -> None:
    payload = ev.ImageRegistered(image_id="r1", model_version="7", embedding=[1.0] * DIM)
    assert alice.reject(payload).code == "DUPLICATE_IMAGE"


def test_versions_increase_by_one_per_appended_event(alice: Journal) -> None:
    alice.unlock_global()
    alice.send(ev.ProfileCreated(name="Moody"))
    alice.send(ev.ImageLiked(image_id="s1"))
    assert alice.state.version == len(alice.log) == 1 + 1 + 3 + 1 + 2


def test_evolve_is_pure() -> None:
    rules = Rules(unlock={"v6": 3, "v7": 3}, embed_dim=DIM)
    before = MemberState()
    created = ev.ProfileCreated(
        name="Global V7 Profile", profile_id="p1", family="v7", version="7", is_global=True
    )
    after = evolve(before, created, rules)
    assert before == MemberState()
    assert (after.version, after.globals) == (1, {"v7": "p1"})


def test_decide_is_pure(alice: Journal) -> None:
    before = alice.state
    grid = ev.GridServed(grid_id="g1", image_ids=["r1", "r2"])
    decide(grid, Context(before, "alice", alice.catalog, alice.rules, lambda: "x"))
    assert alice.state is before
    assert before == MemberState()


def test_a_grid_shows_only_images_of_its_profiles_family(alice: Journal) -> None:
    error = alice.reject(ev.GridServed(grid_id="g1", image_ids=[V7_IMAGES[0], V6_IMAGES[0]]))
    assert (error.code, error.field) == ("VERSION_MISMATCH", "payload.image_ids")
    assert repr(V6_IMAGES[0]) in error.message and "V7" in error.message


def test_rule5_the_profile_limit_has_its_own_code_not_the_prompt_limits(unlocked: Journal) -> None:
    """``TOO_MANY_PROFILES`` is the resolver's limit of ``--p`` values; a member who has as
    many profiles as allowed gets ``PROFILE_LIMIT``, which names that limit."""
    for n in range(MAX_PROFILES - 1):
        unlocked.send(ev.ProfileCreated(name=f"p{n}"))
    error = unlocked.reject(ev.ProfileCreated(name="one too many"))
    assert (error.code, error.field) == ("PROFILE_LIMIT", "type")
    assert f"at most {MAX_PROFILES} profiles" in error.message


def test_rule6_deleted_profiles_leave_the_state_but_are_still_told_apart(
    unlocked: Journal,
) -> None:
    [created] = unlocked.send(ev.ProfileCreated(name="Gone"))
    assert isinstance(created, ev.ProfileCreated) and created.profile_id
    unlocked.send(ev.ProfileDeleted(profile_id=created.profile_id))
    assert created.profile_id not in unlocked.state.profiles
    assert "Gone" not in unlocked.state.model_dump_json()
    error = unlocked.reject(ev.ProfileRenamed(profile_id=created.profile_id, name="Back"))
    assert error.code == "PROFILE_DELETED"
    assert unlocked.send(ev.ProfileDeleted(profile_id=created.profile_id)) == []
