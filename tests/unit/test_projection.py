"""The profile projection: a pure, deterministic fold of logged events into read models."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.domain import events as ev
from shared.domain.projection import Views, reads
from shared.domain.views import CodeView, MemberCode, MemberDeletion, MemberView, ProfileModel
from tests.unit.builders import (
    DIM,
    EMBEDDINGS,
    V7_IMAGES,
    Journal,
    at,
    fresh_projection,
    logged,
    minted,
    position,
    project,
)


def bytes_of(views: Views) -> dict[str, bytes]:
    """Every read model as stored after the views' batch, by key."""
    stored = {
        **{f"member:{k}": v.to_bytes() for k, v in views.members.items()},
        **{f"profile:{k}": v.to_bytes() for k, v in views.profiles.items()},
        **{f"code:{k}": v.to_bytes() for k, v in views.codes.items()},
        **{f"codes:{e.member_id}|{e.index}": e.to_bytes() for e in views.minted},
        **{f"deleted:{e.member_id}|{e.index}": e.to_bytes() for e in views.deletions},
    }
    return dict(sorted(stored.items()))


@pytest.fixture
def alice() -> Journal:
    return Journal()


@pytest.fixture
def busy(alice: Journal) -> Journal:
    """Alice unlocks her Global V7 Profile, creates and feeds a second one, likes and ranks."""
    alice.unlock_global()
    alice.send(ev.ProfileCreated(name="Moody"))
    alice.grid("g2", V7_IMAGES[2:], profile_id="prof2")
    alice.pick("g2", "r6", "r4")
    alice.send(ev.ImageLiked(image_id="r5"))
    alice.send(ev.ImageLiked(image_id="s2"))
    alice.send(ev.PairRanked(winner_image_id="r2", loser_image_id="r6"))
    alice.send(ev.ImageUnliked(image_id="r5"))
    alice.append(minted("abc1234", "prof1", "Global V7 Profile"))
    alice.send(ev.ProfileRenamed(profile_id="prof2", name="Bright"))
    return alice


def test_rule2_picks_show_progress_until_the_profile_unlocks(alice: Journal) -> None:
    alice.grid("g1", V7_IMAGES[:4])
    alice.pick("g1", "r1", "r2")
    global_v7 = project(alice.log).members["alice"].profiles["prof1"]
    assert (global_v7.picks, global_v7.needed, global_v7.remaining) == (2, 3, 1)
    assert not global_v7.unlocked
    alice.pick("g1", "r3")
    assert project(alice.log).members["alice"].profiles["prof1"].unlocked


def test_rule2_ranked_pairs_count_as_picks_and_likes_do_not(alice: Journal) -> None:
    alice.send(ev.PairRanked(winner_image_id="r1", loser_image_id="r2"))
    alice.send(ev.ImageLiked(image_id="r3"))
    global_v7 = project(alice.log).members["alice"].profiles["prof1"]
    assert (global_v7.picks, global_v7.evidence) == (1, 2)


def test_rule3_more_picks_add_more_evidence(alice: Journal) -> None:
    alice.grid("g1", V7_IMAGES)
    evidence = []
    for image in V7_IMAGES[:4]:
        alice.pick("g1", image)
        evidence.append(project(alice.log).members["alice"].profiles["prof1"].evidence)
    assert evidence == [1, 2, 3, 4]


def test_rule4_unlike_takes_the_evidence_back(alice: Journal) -> None:
    alice.send(ev.ImageLiked(image_id="r1"))
    liked = project(alice.log)
    alice.send(ev.ImageUnliked(image_id="r1"))
    unliked = project(alice.log)
    assert liked.members["alice"].profiles["prof1"].evidence == 1
    assert unliked.members["alice"].profiles["prof1"].evidence == 0


def test_change_is_emitted_for_the_member_and_profile_that_learned(busy: Journal) -> None:
    projection = project(busy.log)
    assert set(projection.changes) == {"prof1", "prof2", "prof3"}
    moody = projection.changes["prof2"]
    last_pick = max(
        i
        for i, e in enumerate(busy.log)
        if e.type == "ImagePicked" and e.payload["profile_id"] == "prof2"
    )
    assert (moody.member_id, moody.profile_id, moody.family, moody.version) == (
        "alice",
        "prof2",
        "v7",
        "7",
    )
    assert (moody.picks, moody.evidence, moody.unlocked) == (2, 2, False)
    assert moody.position == position(last_pick)
    assert moody.name == "Moody"
    assert np.linalg.norm(moody.vector) == pytest.approx(1.0)


def test_change_says_unlocked_once_enough_picks_arrived(alice: Journal) -> None:
    alice.unlock_global()
    change = project(alice.log).changes["prof1"]
    assert (change.picks, change.unlocked) == (3, True)


def test_change_vector_moves_towards_the_picked_images(alice: Journal) -> None:
    alice.grid("g1", ["r1", "r2"])
    alice.pick("g1", "r1")
    vector = project(alice.log).changes["prof1"].vector
    assert vector @ EMBEDDINGS["r1"] > vector @ EMBEDDINGS["r2"]


def test_rule7_code_minted_sets_latest_code_and_numbers_the_member_codes(
    busy: Journal,
) -> None:
    first = next(i for i, e in enumerate(busy.log) if e.type == "CodeMinted")
    busy.append(minted("def5678", "prof1", "Global V7 Profile", evidence=6))
    projection = project(busy.log)
    member = projection.members["alice"]
    assert member.codes_minted == 2
    assert list(projection.minted) == [
        MemberCode(member_id="alice", index=0, code="abc1234", position=position(first)),
        MemberCode(
            member_id="alice", index=1, code="def5678", position=position(len(busy.log) - 1)
        ),
    ]
    assert member.profiles["prof1"].latest_code == "def5678"
    assert projection.codes["abc1234"] == CodeView(
        code="abc1234",
        member_id="alice",
        profile_id="prof1",
        profile_name="Global V7 Profile",
        family="v7",
        version="7",
        vector=ev.encode_vector(np.array([1.0, 0.0, 0.0, 0.0])),
        evidence=3,
        picks=3,
        minted_at=at(first),
        position=position(first),
    )


def test_rule5_rename_updates_the_name_and_keeps_the_id(busy: Journal) -> None:
    moody = project(busy.log).members["alice"].profiles["prof2"]
    assert (moody.profile_id, moody.name) == ("prof2", "Bright")


def test_rule6_delete_moves_the_profile_out_of_the_member_view_and_the_defaults(
    busy: Journal,
) -> None:
    busy.send(ev.DefaultProfilesSelected(profile_ids=["prof1", "prof2"]))
    selected = project(busy.log).members["alice"]
    busy.send(ev.ProfileDeleted(profile_id="prof2"))
    projection = project(busy.log)
    member = projection.members["alice"]
    assert selected.defaults == ["prof1", "prof2"]
    assert list(member.profiles) == ["prof1", "prof3"] and member.defaults == ["prof1"]
    assert member.profiles_deleted == 1
    assert list(projection.deletions) == [
        MemberDeletion(
            member_id="alice", index=0, profile_id="prof2", position=position(len(busy.log) - 1)
        )
    ]


def test_rule6_a_deleted_profile_keeps_its_summary_on_its_model_without_a_learner(
    busy: Journal,
) -> None:
    before = project(busy.log).members["alice"].profiles["prof2"]
    busy.send(ev.ProfileDeleted(profile_id="prof2"))
    projection = project(busy.log)
    model = projection.profiles["prof2"]
    assert model.summary == before.model_copy(update={"deleted": True})
    assert (model.state, model.position) == ("", position(len(busy.log) - 1))
    assert "prof2" not in projection.learners and "prof2" not in projection.touched
    assert projection.changed().profiles["prof2"].state == ""


def test_rule6_a_code_minted_after_deletion_is_the_deleted_profiles_latest(busy: Journal) -> None:
    busy.send(ev.ProfileDeleted(profile_id="prof2"))
    busy.append(minted("late123", "prof2", "Bright"))
    projection = project(busy.log)
    summary = projection.profiles["prof2"].summary
    assert summary is not None and summary.latest_code == "late123"
    assert projection.members["alice"].codes_minted == 2 and "prof2" in projection.retired


def test_data_for_a_profile_that_is_not_active_changes_no_profile(busy: Journal) -> None:
    busy.send(ev.ProfileDeleted(profile_id="prof2"))
    before = bytes_of(project(busy.log))
    stray = ev.ImagePicked(grid_id="g2", image_id="r3", profile_id="prof2", candidates=["r3", "r5"])
    after = project([*busy.log, logged(stray, "alice", len(busy.log))])
    del before["member:alice"]
    assert {k: v for k, v in bytes_of(after).items() if k != "member:alice"} == before
    assert after.members["alice"].profiles == project(busy.log).members["alice"].profiles


@pytest.mark.parametrize("cycles", [400])
def test_the_member_view_does_not_grow_with_deleted_profiles(cycles: int) -> None:
    def view_after(n: int) -> bytes:
        alice = Journal()
        alice.unlock_global()
        alice.append(minted("abc1234", "prof1", "Global V7 Profile"))
        for i in range(n):
            [created] = alice.send(ev.ProfileCreated(name=f"Try {i}"))
            assert isinstance(created, ev.ProfileCreated) and created.profile_id
            alice.send(ev.ProfileDeleted(profile_id=created.profile_id))
        alice.grid("g-last", V7_IMAGES[:3])
        alice.pick("g-last", "r1")
        return project(alice.log).members["alice"].to_bytes()

    one, many = view_after(1), view_after(cycles)
    assert abs(len(many) - len(one)) <= 16, (len(one), len(many))


def test_rule8_member_settings_follow_their_events(alice: Journal) -> None:
    alice.send(ev.PersonalizationToggled(enabled=True))
    alice.send(ev.DefaultVersionSet(version="6.1"))
    member = project(alice.log).members["alice"]
    assert (member.personalization, member.default_version) == (True, "6.1")


def test_rule5_new_profile_summary_starts_locked_with_the_threshold(busy: Journal) -> None:
    bright = project(busy.log).members["alice"].profiles["prof2"]
    assert (bright.family, bright.version, bright.is_global, bright.needed) == ("v7", "7", False, 3)
    assert bright.created_at == at(5)
    assert bright.latest_code is None


def test_member_position_is_the_last_event_folded_for_them(busy: Journal) -> None:
    assert project(busy.log).members["alice"].position == position(len(busy.log) - 1)


def test_events_without_a_read_model_leave_members_untouched() -> None:
    registered = ev.ImageRegistered(image_id="r9", model_version="7", embedding=[1.0] * DIM)
    projection = project([logged(registered, "catalog-service", 0)])
    assert projection.members == {}
    assert projection.dirty_members == set()


def test_flushed_learner_state_restores_the_same_learner(busy: Journal) -> None:
    projection = project(busy.log)
    model = projection.changed().profiles["prof2"]
    restored = fresh_projection(profiles={"prof2": ProfileModel.from_bytes(model.to_bytes())})
    learner = restored.learner("alice", "prof2")
    assert learner.evidence == 2
    assert np.array_equal(learner.vector(), projection.changes["prof2"].vector)


def test_reads_name_what_a_batch_loads(busy: Journal) -> None:
    needed = {e.type: reads(e.typed_payload()).images for e in busy.log}
    assert needed["ImagePicked"] == {"r3", "r4", "r5"}  # the last pick; r6 was picked before
    assert needed["ImageUnliked"] == {"r5"}
    assert needed["PairRanked"] == {"r2", "r6"}
    assert needed["GridServed"] == set()
    touched = set().union(*(reads(e.typed_payload()).profiles for e in busy.log))
    assert touched == {"prof1", "prof2", "prof3"}


def test_replay_from_empty_is_byte_identical(busy: Journal) -> None:
    assert bytes_of(project(busy.log)) == bytes_of(project(busy.log))


#: Models a batch writes once and never reads back: codes and the members' history entries.
WRITTEN_ONCE = ("code:", "codes:", "deleted:")


def reloaded(views: Views) -> Views:
    """What the next batch starts from: the views written by this one, read back."""
    return fresh_projection(
        members={k: MemberView.from_bytes(v.to_bytes()) for k, v in views.members.items()},
        profiles={k: ProfileModel.from_bytes(v.to_bytes()) for k, v in views.profiles.items()},
    )


def test_stored_views_read_back_identically(busy: Journal) -> None:
    projection = project(busy.log)
    assert bytes_of(reloaded(projection)) == {
        k: v for k, v in bytes_of(projection).items() if not k.startswith(WRITTEN_ONCE)
    }


@settings(max_examples=25, deadline=None)
@given(split=st.integers(min_value=0, max_value=50))
def test_replay_in_batches_matches_one_fold(split: int) -> None:
    journal = Journal()
    journal.unlock_global()
    journal.send(ev.ProfileCreated(name="Moody"))
    journal.grid("g2", V7_IMAGES, profile_id="prof2")
    journal.pick("g2", "r6", "r1", "r3")
    journal.send(ev.ImageLiked(image_id="s1"))
    journal.send(ev.PairRanked(winner_image_id="r4", loser_image_id="r5"))
    journal.send(ev.ImageUnliked(image_id="s1"))
    journal.append(minted("abc1234", "prof2", "Moody"))
    journal.send(ev.ProfileDeleted(profile_id="prof2"))
    journal.append(minted("def5678", "prof2", "Moody"))
    journal.send(ev.ProfileCreated(name="Brief"))
    journal.send(ev.ProfileDeleted(profile_id="prof4"))
    split = min(split, len(journal.log))
    whole = bytes_of(project(journal.log))
    first = project(journal.log[:split])
    second = project(journal.log[split:], reloaded(first), start=split)
    once = {k: v for k, v in whole.items() if k.startswith(WRITTEN_ONCE)}
    assert {**bytes_of(second), **once} == whole


def test_folding_returns_new_views_and_leaves_the_old_ones_as_they_were(busy: Journal) -> None:
    split = 1 + next(
        i
        for i, e in enumerate(busy.log)
        if e.payload.get("profile_id") == "prof2" and e.type == "ImagePicked"
    )
    before = project(busy.log[:split])
    stored, learner = bytes_of(before), before.learner("alice", "prof2").state()
    after = project(busy.log[split:], before, start=split)
    assert after.learner("alice", "prof2").evidence > before.learner("alice", "prof2").evidence
    assert bytes_of(before) == stored
    assert before.learner("alice", "prof2").state() == learner
    assert bytes_of(after) == bytes_of(project(busy.log))
    with pytest.raises(ValidationError):
        after.members["alice"].personalization = True  # type: ignore[misc]
