"""Rules 2, 6 and 7 as the Personalize page and ``/list_personalize_codes`` show them."""

from __future__ import annotations

import pytest

from shared.domain import events as ev
from shared.domain.listing import Listing, ListRequest, listing
from shared.domain.projection import Views
from shared.domain.views import MemberView
from tests.unit.builders import Journal, member_view, minted, project, summary


class History:
    """What the resolver reads for a listing, from one projection: the member view, her code
    entries (newest first) and the summaries deleted profiles keep on their models."""

    def __init__(self, projection: Views, member_id: str = "alice") -> None:
        self.member_id = member_id
        self.member: MemberView = projection.members[member_id]
        entries = sorted(projection.minted, key=lambda e: e.index, reverse=True)
        self.codes = [projection.codes[e.code] for e in entries]
        self.deleted = {
            pid: m.summary for pid, m in projection.profiles.items() if m.summary is not None
        }

    def listed(self, include_deleted: bool) -> Listing:
        return listing(self.member_id, self.member, self.codes, self.deleted, include_deleted)


@pytest.fixture
def history() -> History:
    """Alice's Moody profile mints a code, is renamed Bright, mints again, and is deleted."""
    alice = Journal()
    alice.unlock_global()
    alice.send(ev.ProfileCreated(name="Moody"))
    alice.append(minted("moody01", "prof2", "Moody"))
    alice.send(ev.ProfileRenamed(profile_id="prof2", name="Bright"))
    alice.append(minted("brite02", "prof2", "Bright"))
    alice.append(minted("globa03", "prof1", "Global V7 Profile"))
    alice.send(ev.ProfileDeleted(profile_id="prof2"))
    return History(project(alice.log))


def test_rule7_codes_are_listed_newest_first(history: History) -> None:
    listed = history.listed(include_deleted=False).codes
    assert [c.code for c in listed] == ["globa03", "brite02", "moody01"]
    assert [c.minted_at for c in listed] == sorted((c.minted_at for c in listed), reverse=True)


def test_rule7_code_listing_shows_the_profile_name_then_and_now(
    history: History,
) -> None:
    by_code = {c.code: c for c in history.listed(include_deleted=False).codes}
    assert (by_code["moody01"].profile_name_then, by_code["moody01"].profile_name_now) == (
        "Moody",
        "Bright",
    )
    assert by_code["brite02"].profile_name_then == "Bright"


def test_rule6_codes_of_a_deleted_profile_stay_listed_and_say_so(
    history: History,
) -> None:
    deleted = {c.code: c.profile_deleted for c in history.listed(False).codes}
    assert deleted == {"globa03": False, "brite02": True, "moody01": True}


def test_rule6_deleted_profiles_are_hidden_unless_asked_for(
    history: History,
) -> None:
    shown = history.listed(include_deleted=False).profiles
    everything = history.listed(include_deleted=True).profiles
    assert [p.profile_id for p in shown] == ["prof1"]
    assert [(p.profile_id, p.deleted) for p in everything] == [("prof1", False), ("prof2", True)]


def test_rule7_profile_listing_shows_the_latest_code(history: History) -> None:
    [global_v7] = history.listed(include_deleted=False).profiles
    assert (global_v7.name, global_v7.latest_code, global_v7.is_global) == (
        "Global V7 Profile",
        "globa03",
        True,
    )


@pytest.mark.parametrize(
    ("picks", "needed", "progress", "unlocked"),
    [(0, 3, 0.0, False), (1, 4, 0.25, False), (3, 3, 1.0, True), (50, 3, 1.0, True)],
)
def test_rule2_progress_is_picks_over_needed_capped_at_one(
    picks: int, needed: int, progress: float, unlocked: bool
) -> None:
    member = member_view("carol", summary("gc", is_global=True, picks=picks, needed=needed))
    [profile] = listing("carol", member, [], {}, include_deleted=False).profiles
    assert (profile.picks, profile.needed) == (picks, needed)
    assert (profile.progress, profile.unlocked) == (pytest.approx(progress), unlocked)


def test_global_profiles_come_first_then_profiles_by_creation() -> None:
    member = member_view(
        "carol",
        summary("late", created=9),
        summary("gv6", family="v6", version="6.1", is_global=True, created=5),
        summary("early", created=2),
        summary("gv7", is_global=True, created=1),
    )
    listed = listing("carol", member, [], {}, include_deleted=False).profiles
    assert [p.profile_id for p in listed] == ["gv7", "gv6", "early", "late"]


def test_listing_carries_the_members_settings() -> None:
    member = member_view(
        "carol",
        summary("gc", is_global=True),
        defaults=["gc"],
        personalization=True,
        default_version="8.1",
    )
    listed = listing("carol", member, [], {}, include_deleted=False)
    assert (listed.default_version, listed.personalization, listed.defaults) == (
        "8.1",
        True,
        ["gc"],
    )


def test_unknown_member_has_an_empty_listing_with_default_settings() -> None:
    listed = listing("nobody", None, [], {}, include_deleted=True)
    assert (listed.member_id, listed.profiles, listed.codes) == ("nobody", [], [])
    assert (listed.default_version, listed.personalization, listed.defaults) == ("7", False, [])


def test_list_request_hides_deleted_profiles_by_default() -> None:
    assert ListRequest(member_id="alice").include_deleted is False
