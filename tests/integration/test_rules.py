"""Every personalization rule of the brief (1-10, plus ownership), proven through the four
running services: inbound messages in, resolver and listing RPC out, the log and the
dead-letter streams read only to check effects."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from services.profile_projector.projector import Projector
from shared.adapters.readmodels import RedisReadModels
from shared.client import Client, inbound
from shared.keys import ACTIVE_GENERATION, all_partitions
from shared.settings import Settings
from tests.helpers import eventually, log_events, register

from .rules_helpers import (
    axis,
    coded,
    codes_of,
    cosine,
    created,
    global_of,
    grid,
    image,
    listing,
    logged,
    named,
    picks,
    rejection,
    styled_catalog,
    unlocked_global,
    vector_of,
)


@pytest.fixture
async def client(system: Client, settings: Settings) -> Client:
    """The running system, with a V7 and a V6 catalog registered."""
    await register(
        system,
        styled_catalog(settings.embed_dim, "7", "v7")
        + styled_catalog(settings.embed_dim, "6.1", "v6", seed=8),
    )
    return system


def version(member: str, value: str) -> dict[str, Any]:
    return inbound("DefaultVersionSet", member, {"version": value})


async def test_rule1_one_global_profile_per_family_and_versions_that_fit(
    client: Client, settings: Settings
) -> None:
    await client.publish_many(
        [
            version("vera", "6.1"),
            *picks("vera", 6, prefix="v6"),
            version("vera", "7"),
            *picks("vera", 6, prefix="v7"),
        ]
    )
    v6 = await unlocked_global(client, "vera", "v6")
    v7 = await unlocked_global(client, "vera", "v7")
    assert v6.profile_id != v7.profile_id
    assert (v6.version, v6.name, v6.picks) == ("6.1", "Global V6 Profile", 6)
    assert (v7.version, v7.name, v7.picks) == ("7", "Global V7 Profile", 6)
    found = await client.profiles("vera")
    assert sum(p.is_global for p in found.profiles) == 2, "one Global Profile per family"

    for prompt, code in (("--p --v 6", v6.latest_code), ("--p --v 7", v7.latest_code)):
        reply = await client.resolve("vera", f"a fox {prompt}")
        assert reply.ok and [e.code for e in reply.entries] == [code], prompt

    later = await client.resolve("vera", f"a fox --p {v7.latest_code} --v 8.1")
    assert later.ok and (later.family, later.version) == ("v7", "8.1"), "V7 serves 8.1"
    older = await client.resolve("vera", f"a fox --p {v6.latest_code} --v 7")
    assert older.ok and older.entries[0].family == "v6", "a V6 code may serve a V7 prompt"
    prompt = f"a fox --p {v7.latest_code} --v 6"
    mismatch = await client.resolve("vera", prompt)
    assert mismatch.error is not None and mismatch.error.code == "VERSION_MISMATCH"
    assert (mismatch.error.token, mismatch.error.position) == (
        v7.latest_code,
        prompt.index(str(v7.latest_code)),
    )

    await client.publish_many(
        [version("vera", "8"), inbound("ProfileCreated", "vera", {"name": "Eight"})]
    )
    made_at_8 = await created(client, "vera", "Eight")
    assert (made_at_8.family, made_at_8.version) == ("v7", "8")
    too_old = await client.resolve("vera", f"a fox --p {made_at_8.profile_id} --v 7")
    assert too_old.error is not None and too_old.error.code == "VERSION_MISMATCH"
    await client.publish_many(picks("vera", 6, profile_id=made_at_8.profile_id))
    code_8 = (await coded(client, "vera", "Eight")).latest_code
    assert (await client.resolve("vera", f"a fox --p {code_8} --v 8.1")).ok
    by_code = await client.resolve("vera", f"a fox --p {code_8} --v 7")
    assert by_code.error is not None and by_code.error.code == "VERSION_MISMATCH"

    prompt = "a fox --p --v 5.2"
    none = await client.resolve("vera", prompt)
    assert none.error is not None and none.error.code == "VERSION_MISMATCH"
    assert (none.error.token, none.error.position) == ("--v 5.2", prompt.index("--v"))


async def test_rule2_locked_until_threshold_with_visible_progress(
    client: Client, settings: Settings
) -> None:
    prompt = "a harbour --p"
    fresh = await client.resolve("lena", prompt)
    assert fresh.error is not None and fresh.error.code == "PROFILE_LOCKED"
    assert f"pick {settings.unlock_v7} images (0/{settings.unlock_v7})" in fresh.error.message

    await client.publish_many(picks("lena", 4))
    found = await listing(client, "lena", lambda f: bool(f.profiles) and f.profiles[0].picks == 4)
    profile = found.profiles[0]
    assert (profile.picks, profile.needed, profile.unlocked) == (4, settings.unlock_v7, False)
    assert profile.progress == pytest.approx(4 / settings.unlock_v7)
    assert profile.latest_code is None and found.codes == []
    locked = await client.resolve("lena", prompt)
    assert locked.error is not None and locked.error.code == "PROFILE_LOCKED"
    assert "pick 2 more images" in locked.error.message
    assert f"(4/{settings.unlock_v7})" in locked.error.message
    assert (locked.error.token, locked.error.position) == ("--p", prompt.index("--p"))

    await client.publish_many(picks("lena", 2))
    unlocked = await unlocked_global(client, "lena")
    assert unlocked.unlocked and unlocked.progress == 1.0 and unlocked.picks == 6
    reply = await client.resolve("lena", prompt)
    assert reply.ok and reply.prompt == f"a harbour --p {unlocked.latest_code}"


async def test_rule3_picks_feed_the_profile_the_grid_was_served_for(
    client: Client, settings: Settings
) -> None:
    await client.publish_many(
        [*picks("pia", 6, style="warm"), inbound("ProfileCreated", "pia", {"name": "Cool"})]
    )
    glob = await unlocked_global(client, "pia")
    cool = await created(client, "pia", "Cool")
    served_for_cool = picks("pia", 6, style="cool", profile_id=cool.profile_id)
    await client.publish_many(served_for_cool)

    cool = await coded(client, "pia", "Cool")
    assert (cool.picks, cool.evidence) == (6, 6)
    after = await client.profiles("pia")
    still = global_of(after, "v7")
    assert still is not None and (still.picks, still.evidence) == (6, 6), "the Global got none"
    events = await logged(client, served_for_cool[-1]["idempotency_key"])
    assert events[-1].type == "ImagePicked"
    assert events[-1].payload["profile_id"] == cool.profile_id

    warm_vector = await vector_of(client, "pia", str(glob.latest_code))
    cool_vector = await vector_of(client, "pia", str(cool.latest_code))
    dim = settings.embed_dim
    assert cosine(warm_vector, axis(dim, "warm")) > cosine(warm_vector, axis(dim, "cool"))
    assert cosine(cool_vector, axis(dim, "cool")) > cosine(cool_vector, axis(dim, "warm"))


async def test_rule4_likes_and_pair_ranks_feed_the_global_profiles(
    client: Client, settings: Settings
) -> None:
    own = {"image_id": "liam-own", "model_version": "7", "embedding": [1.0] * settings.embed_dim}
    await register(client, [inbound("ImageRegistered", "liam", own, key="reg-liam-own")])
    like_v6 = inbound("ImageLiked", "liam", {"image_id": image("v6", "warm", 0)})
    like_own = inbound("ImageLiked", "liam", {"image_id": "liam-own"})
    marker = version("liam", "7")
    await client.publish_many([like_v6, like_own, marker])

    [created, liked] = await logged(client, like_v6["idempotency_key"])
    assert created.type == "ProfileCreated" and created.payload["family"] == "v6"
    assert created.payload["is_global"] is True, "a V6 like feeds the V6 Global Profile"
    assert (
        liked.type == "ImageLiked" and liked.payload["profile_id"] == created.payload["profile_id"]
    )
    await logged(client, marker["idempotency_key"])
    events = await log_events(client.redis, settings.partitions)
    assert not [
        e for e in events if e.payload.get("image_id") == "liam-own" and e.type == "ImageLiked"
    ]
    found = await listing(
        client, "liam", lambda f: bool(f.profiles) and f.profiles[0].evidence == 1
    )
    assert [(p.family, p.picks, p.evidence) for p in found.profiles] == [("v6", 0, 1)]

    unlike = inbound("ImageUnliked", "liam", {"image_id": image("v6", "warm", 0)})
    ranked = inbound(
        "PairRanked",
        "liam",
        {"winner_image_id": image("v7", "warm", 0), "loser_image_id": image("v7", "cool", 0)},
    )
    await client.publish_many([unlike, ranked])
    [unliked] = await logged(client, unlike["idempotency_key"])
    assert unliked.type == "ImageUnliked"
    assert unliked.payload["profile_id"] == created.payload["profile_id"]
    rank_events = await logged(client, ranked["idempotency_key"])
    assert [e.type for e in rank_events] == ["ProfileCreated", "PairRanked"]
    assert rank_events[0].payload["is_global"] is True
    found = await listing(
        client, "liam", lambda f: (g := global_of(f, "v7")) is not None and g.picks == 1
    )
    v6, v7 = global_of(found, "v6"), global_of(found, "v7")
    assert v6 is not None and v6.evidence == 0, "the unlike took the like back"
    assert v7 is not None and (v7.picks, v7.evidence) == (1, 1), "a rank counts toward unlocking"


async def test_rule5_additional_profiles_after_unlock_renamed_never_a_deleted_global(
    client: Client, settings: Settings
) -> None:
    early = inbound("ProfileCreated", "ada", {"name": "Too early"})
    landscapes = inbound("ProfileCreated", "ada", {"name": "Landscapes"})
    portraits = inbound("ProfileCreated", "ada", {"name": "Portraits"})
    await client.publish_many([early, *picks("ada", 6), landscapes, portraits])
    letter = await rejection(client, early["idempotency_key"])
    assert letter.code == "PROFILE_LOCKED" and "pick 6 more images" in letter.reason

    found = await listing(client, "ada", lambda f: len(f.profiles) == 3)
    glob, land, port = global_of(found, "v7"), named(found, "Landscapes"), named(found, "Portraits")
    assert glob is not None and land is not None and port is not None
    assert len({glob.profile_id, land.profile_id, port.profile_id}) == 3, "unique IDs"
    for made in (land, port):
        assert (made.is_global, made.family, made.version) == (False, "v7", "7")
        assert (made.picks, made.needed, made.unlocked, made.latest_code) == (0, 6, False, None)
    prompt = f"a valley --p {land.profile_id}"
    locked = await client.resolve("ada", prompt)
    assert locked.error is not None and locked.error.code == "PROFILE_LOCKED"
    assert (
        "pick 6 more images" in locked.error.message
        and "'Landscapes' (0/6)" in locked.error.message
    )
    assert (locked.error.token, locked.error.position) == (
        land.profile_id,
        prompt.index(land.profile_id),
    )

    await client.publish_many(picks("ada", 6, profile_id=land.profile_id))
    code = (await coded(client, "ada", "Landscapes")).latest_code
    rename = inbound("ProfileRenamed", "ada", {"profile_id": land.profile_id, "name": "Vistas"})
    delete_global = inbound("ProfileDeleted", "ada", {"profile_id": glob.profile_id})
    await client.publish_many([rename, delete_global])
    found = await listing(client, "ada", lambda f: named(f, "Vistas") is not None)
    [listed] = codes_of(found, land.profile_id)
    assert (listed.code, listed.profile_name_then, listed.profile_name_now) == (
        code,
        "Landscapes",
        "Vistas",
    )
    reply = await client.resolve("ada", f"a valley --p {land.profile_id}")
    assert reply.ok and reply.entries[0].code == code and reply.entries[0].profile_name == "Vistas"
    assert (await client.resolve("ada", f"a valley --p {code}")).vector == reply.vector
    letter = await rejection(client, delete_global["idempotency_key"])
    assert (letter.code, letter.field) == ("GLOBAL_PROFILE", "payload.profile_id")
    assert global_of(await client.profiles("ada"), "v7") is not None


async def test_rule6_a_deleted_profile_leaves_the_lists_takes_no_data_and_its_codes_resolve(
    client: Client, settings: Settings
) -> None:
    await client.publish_many(
        [*picks("dora", 6), inbound("ProfileCreated", "dora", {"name": "Doomed"})]
    )
    doomed = await created(client, "dora", "Doomed")
    assert doomed is not None
    pid = doomed.profile_id
    open_grid = grid("dora", [image("v7", "warm", i) for i in range(6)], [], profile_id=pid)
    select = inbound("DefaultProfilesSelected", "dora", {"profile_ids": [pid]})
    await client.publish_many([*picks("dora", 6, profile_id=pid), *open_grid, select])
    code = (await coded(client, "dora", "Doomed")).latest_code
    assert code is not None
    await listing(client, "dora", lambda f: f.defaults == [pid])

    delete = inbound("ProfileDeleted", "dora", {"profile_id": pid})
    late_pick = inbound(
        "ImagePicked",
        "dora",
        {"grid_id": open_grid[0]["payload"]["grid_id"], "image_id": image("v7", "warm", 0)},
    )
    late_grid = grid("dora", [image("v7", "cool", i) for i in range(6)], [], profile_id=pid)
    rename = inbound("ProfileRenamed", "dora", {"profile_id": pid, "name": "Undead"})
    reselect = inbound("DefaultProfilesSelected", "dora", {"profile_ids": [pid]})
    await client.publish_many([delete, late_pick, *late_grid, rename, reselect])
    for message in (late_pick, late_grid[0], rename, reselect):
        letter = await rejection(client, message["idempotency_key"])
        assert letter.code == "PROFILE_DELETED", letter

    visible = await listing(client, "dora", lambda f: named(f, "Doomed") is None)
    assert [p.name for p in visible.profiles] == ["Global V7 Profile"] and visible.defaults == []
    everything = await client.profiles("dora", include_deleted=True)
    gone = named(everything, "Doomed")
    assert gone is not None and gone.deleted and gone.picks == 6, "no data after deletion"
    [listed] = codes_of(everything, pid)
    assert (listed.code, listed.profile_deleted, listed.profile_name_now) == (code, True, "Doomed")
    by_id = await client.resolve("dora", f"a ruin --p {pid}")
    assert by_id.error is not None and by_id.error.code == "PROFILE_DELETED"

    reply = await client.resolve("dora", f"a ruin --p {code}")
    assert reply.ok and reply.entries[0].code == code
    assert any("deleted" in warning for warning in reply.warnings), reply.warnings
    other = await client.resolve("olaf", f"a ruin --p {code}")
    assert other.ok and other.vector == reply.vector, "anyone may still use the code"

    await _rebuild_into_generation(client, settings, 2)
    rebuilt = await eventually(
        lambda: client.resolve("dora", f"a ruin --p {code}"), lambda r: r.ok, timeout=5
    )
    assert rebuilt == reply, "the rebuilt read models resolve the deleted profile's code alike"
    assert await client.profiles("dora", include_deleted=True) == everything
    await client.publish_many(picks("dora", 6, style="cool"))
    before = len(everything.codes)
    moved = await listing(
        client, "dora", lambda f: f.profiles[0].picks == 12 and len(f.codes) > before
    )
    assert moved.codes[-before:] == everything.codes, "the live projector goes on in the new one"


async def _rebuild_into_generation(client: Client, settings: Settings, generation: int) -> None:
    """Replay the whole log into a fresh generation, make it the active one, and drop the old
    generation's codes so that only the rebuilt read models can answer for them."""
    replay = Projector(
        RedisReadModels(client.redis, settings, generation), settings, emit_changes=False
    )
    for partition in all_partitions(settings.partitions):
        log: Any = await client.redis.xrange(partition.log)
        entries = [(entry_id.decode(), fields) for entry_id, fields in log]
        if entries:
            assert await replay.apply(partition, "0-0", entries)
    await client.redis.set(ACTIVE_GENERATION, generation)
    for partition in all_partitions(settings.partitions):
        old = partition.read_model(generation - 1)
        stale = [key async for key in client.redis.scan_iter(match=old.code("*"))]
        if stale:
            await client.redis.delete(*stale)


async def test_rule7_every_update_mints_a_new_code_and_old_codes_stay_valid(
    client: Client, settings: Settings
) -> None:
    await client.publish_many(picks("cody", 6, style="warm"))
    first = await unlocked_global(client, "cody")
    first_code = str(first.latest_code)
    first_vector = await vector_of(client, "cody", first_code)

    for stage in (2, 3):
        await client.publish_many(picks("cody", 6, style="cool"))
        found = await listing(
            client,
            "cody",
            lambda f, n=stage: f.profiles[0].picks == 6 * n and len(f.codes) >= n,  # type: ignore[misc]
        )
    profile = found.profiles[0]
    assert found.codes[0].code == profile.latest_code != first_code
    assert found.codes[-1].code == first_code, "newest first, the first code last"
    assert len({c.code for c in found.codes}) == len(found.codes)
    evidence = [c.evidence for c in found.codes]
    assert evidence == sorted(evidence, reverse=True) and len(set(evidence)) == len(evidence)
    times = [c.minted_at for c in found.codes]
    assert times == sorted(times, reverse=True)
    for listed in found.codes:
        assert listed.profile_id == profile.profile_id
        assert (listed.profile_name_then, listed.profile_name_now) == ("Global V7 Profile",) * 2
        assert (listed.family, listed.version, listed.profile_deleted) == ("v7", "7", False)
        assert listed.picks == listed.evidence
    assert found.codes[-1].evidence == settings.unlock_v7

    again = await vector_of(client, "cody", first_code)
    assert np.array_equal(again, first_vector), "an old code labels one immutable state"
    latest = await vector_of(client, "cody", str(profile.latest_code))
    dim = settings.embed_dim
    assert cosine(latest, axis(dim, "cool")) > cosine(first_vector, axis(dim, "cool"))
    minted = [
        e.payload
        for e in await log_events(client.redis, settings.partitions)
        if e.type == "CodeMinted"
    ]
    assert sorted(m["code"] for m in minted) == sorted(c.code for c in found.codes)


async def test_rule8_p_values_defaults_ids_codes_weights_and_the_switch(
    client: Client, settings: Settings
) -> None:
    await client.publish_many(
        [*picks("max", 6, style="warm"), inbound("ProfileCreated", "max", {"name": "Alt"})]
    )
    glob = await unlocked_global(client, "max")
    alt = await created(client, "max", "Alt")
    assert alt is not None
    await client.publish_many(picks("max", 6, style="cool", profile_id=alt.profile_id))
    alt = await coded(client, "max", "Alt")
    g, a = str(glob.latest_code), str(alt.latest_code)

    plain = await client.resolve("max", "a cat --p --s 250")
    assert plain.prompt == f"a cat --p {g} --s 250", "--p alone: the Global Profile"
    assert [(e.code, e.source, e.profile_id) for e in plain.entries] == [
        (g, "default", glob.profile_id)
    ]
    by_id = await client.resolve("max", f"a cat --p {alt.profile_id} --ar 1:1")
    assert by_id.prompt == f"a cat --p {a} --ar 1:1", "a profile ID becomes its latest code"
    assert by_id.entries[0].source == "profile" and by_id.entries[0].profile_name == "Alt"
    by_code = await client.resolve("max", f"a cat --p {a}")
    assert by_code.prompt == f"a cat --p {a}" and by_code.entries[0].source == "code"

    vg, va = await vector_of(client, "max", g), await vector_of(client, "max", a)
    mixed = await client.resolve("max", f"a cat --profile {g} --ar 1:1 —p {a}::0.5")
    assert mixed.prompt == f"a cat --p {g} {a}::0.5 --ar 1:1", "all --p flags merge into one"
    assert [(e.code, e.weight) for e in mixed.entries] == [(g, 1.0), (a, 0.5)]
    expected = vg + 0.5 * va
    assert np.allclose(mixed.vector or [], expected / np.linalg.norm(expected))
    heavy = await client.resolve("max", f"a cat --p {g}::0.25 {a}::2")
    expected = 0.25 * vg + 2 * va
    assert np.allclose(heavy.vector or [], expected / np.linalg.norm(expected))

    without = await client.resolve("max", "a cat --ar 2:3")
    assert without.ok and without.prompt == "a cat --ar 2:3" and without.entries == []
    assert without.strength == 0.0
    select = inbound(
        "DefaultProfilesSelected", "max", {"profile_ids": [alt.profile_id, glob.profile_id]}
    )
    await client.publish(select)
    await listing(client, "max", lambda f: len(f.defaults) == 2)
    defaults = await client.resolve("max", "a cat --p")
    assert defaults.prompt == f"a cat --p {a} {g}", "--p alone: the selected defaults"
    assert {e.source for e in defaults.entries} == {"default"}
    await client.publish(inbound("PersonalizationToggled", "max", {"enabled": True}))
    await listing(client, "max", lambda f: f.personalization)
    switched = await client.resolve("max", "a cat --ar 2:3")
    assert switched.prompt == f"a cat --ar 2:3 --p {a} {g}", "switched on: defaults added"
    assert switched.vector == defaults.vector and switched.strength == 1.0


async def test_rule9_clear_errors_with_code_token_and_position(
    client: Client, settings: Settings
) -> None:
    await client.publish_many(picks("owen", 6) + picks("lou", 2))
    owner = await unlocked_global(client, "owen")
    await listing(client, "lou", lambda f: bool(f.profiles) and f.profiles[0].picks == 2)
    values = " ".join(f"code{i:03d}" for i in range(settings.max_p_values + 1))
    cases = [
        ("lou", "a bay --p", "PROFILE_LOCKED", "--p", "pick 4 more images"),
        ("lou", "a bay --p zzzzzzz", "UNKNOWN_CODE", "zzzzzzz", "no code 'zzzzzzz' exists"),
        (
            "owen",
            f"a bay --p {owner.latest_code} --v 6",
            "VERSION_MISMATCH",
            str(owner.latest_code),
            "--v 6",
        ),
        ("owen", "a bay --p --v 5.2", "VERSION_MISMATCH", "--v 5.2", "version 5.2 has none"),
        ("lou", "a bay --s 1200 --p", "INVALID_PARAMETER", "1200", "from 0 to 1000, got '1200'"),
        ("lou", "a bay --s=250", "INVALID_PARAMETER", "--s=250", "malformed parameter"),
        ("lou", "a bay --p abc::heavy", "INVALID_PARAMETER", "abc::heavy", "weight"),
        ("lou", "a bay --v seven", "INVALID_PARAMETER", "seven", "--v must be"),
        (
            "lou",
            f"a bay --p {owner.profile_id}",
            "NOT_OWNER",
            owner.profile_id,
            "belongs to another member",
        ),
        (
            "lou",
            f"a bay --p {values}",
            "TOO_MANY_PROFILES",
            f"code{settings.max_p_values:03d}",
            f"at most {settings.max_p_values}",
        ),
    ]
    for member, prompt, code, token, says in cases:
        for reply in (
            await client.resolve(member, prompt),
            await client.resolve_plain(member, prompt),
        ):
            assert not reply.ok and reply.error is not None, prompt
            assert (reply.error.code, reply.error.token) == (code, token), prompt
            assert reply.error.position == prompt.index(token), prompt
            assert says in reply.error.message, (prompt, reply.error.message)
    limit = settings.max_prompt_length
    long = await client.resolve("lou", "x" * (limit + 1) + " --p")
    assert long.error is not None and long.error.code == "PROMPT_TOO_LONG"
    assert str(limit) in long.error.message and long.error.position == limit


async def test_rule10_stylize_sets_the_strength(client: Client, settings: Settings) -> None:
    await client.publish_many(picks("stella", 6))
    await unlocked_global(client, "stella")
    default = await client.resolve("stella", "a dune --p")
    assert (default.stylize, default.strength) == (100, 1.0)
    explicit = await client.resolve("stella", "a dune --p --stylize 100")
    assert explicit.strength == 1.0 and explicit.vector == default.vector
    strengths: list[float] = []
    for s in (0, 1, 50, 100, 250, 500, 999, 1000):
        reply = await client.resolve("stella", f"a dune --p --s {s}")
        assert reply.ok and reply.stylize == s and reply.strength is not None
        assert reply.prompt == f"a dune --p {default.entries[0].code} --s {s}"
        strengths.append(reply.strength)
    assert strengths[0] == 0.0, "--s 0 applies none of the personalization"
    assert all(a < b for a, b in itertools.pairwise(strengths)), strengths
    assert strengths[-1] == pytest.approx(math.log2(11))
    over = await client.resolve("stella", "a dune --p --s 1001")
    assert over.error is not None and over.error.code == "INVALID_PARAMETER"


async def test_ownership_only_the_owner_uses_a_profile_while_codes_are_for_anyone(
    client: Client, settings: Settings
) -> None:
    await client.publish_many(
        [*picks("olga", 6), inbound("ProfileCreated", "olga", {"name": "Mine"})]
    )
    await client.publish_many(picks("ivan", 6))
    glob = await unlocked_global(client, "olga")
    mine = await created(client, "olga", "Mine")
    assert mine is not None
    await client.publish_many(picks("olga", 6, profile_id=mine.profile_id))
    mine = await coded(client, "olga", "Mine")
    await unlocked_global(client, "ivan")

    theirs = mine.profile_id
    intrusions = [
        *grid("ivan", [image("v7", "warm", i) for i in range(6)], [], profile_id=theirs),
        inbound("ProfileRenamed", "ivan", {"profile_id": theirs, "name": "Stolen"}),
        inbound("ProfileDeleted", "ivan", {"profile_id": theirs}),
        inbound("DefaultProfilesSelected", "ivan", {"profile_ids": [theirs]}),
    ]
    await client.publish_many(intrusions)
    for message in intrusions:
        letter = await rejection(client, message["idempotency_key"])
        assert letter.code == "NOT_OWNER", (message["type"], letter)
    untouched = named(await client.profiles("olga"), "Mine")
    assert untouched is not None and untouched.picks == 6 and not untouched.deleted

    for pid in (glob.profile_id, theirs):
        prompt = f"a kite --p {pid}"
        reply = await client.resolve("ivan", prompt)
        assert reply.error is not None and reply.error.code == "NOT_OWNER", reply
    for code in (glob.latest_code, mine.latest_code):
        shared = await client.resolve("ivan", f"a kite --p {code}")
        assert shared.ok and shared.entries[0].code == code
        assert (shared.entries[0].profile_id, shared.entries[0].profile_name) == (None, None)
        own = await client.resolve("olga", f"a kite --p {code}")
        assert own.entries[0].profile_id is not None and own.vector == shared.vector


async def test_rule9_another_members_profile_without_data_yet_is_not_owner(
    client: Client, settings: Settings
) -> None:
    await client.publish_many(
        [*picks("olga", 6), inbound("ProfileCreated", "olga", {"name": "Fresh"})]
    )
    fresh = await created(client, "olga", "Fresh")
    assert fresh is not None and fresh.evidence == 0
    prompt = f"a kite --p {fresh.profile_id}"
    reply = await client.resolve("ivan", prompt)
    assert reply.error is not None
    assert (reply.error.code, reply.error.token) == ("NOT_OWNER", fresh.profile_id)


async def test_rule5_profiles_created_together_are_listed_in_creation_order(
    client: Client, settings: Settings
) -> None:
    await client.publish_many(picks("nora", 6))
    await unlocked_global(client, "nora")
    names = [f"Profile {i}" for i in range(8)]
    await client.publish_many(inbound("ProfileCreated", "nora", {"name": n}) for n in names)
    found = await listing(client, "nora", lambda f: len(f.profiles) == 1 + len(names))
    assert [p.name for p in found.profiles if not p.is_global] == names
