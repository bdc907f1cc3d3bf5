"""The committed AsyncAPI document (docs/asyncapi.json) is what FastStream generates now."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_committed_asyncapi_document_is_current(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    subprocess.run(
        [sys.executable, "-m", "faststream", "docs", "gen", "tools.contract:app", "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    committed = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    assert json.loads(out.read_text()) == committed, "run `make docs` and commit docs/asyncapi.json"


def test_every_inbound_type_has_a_documented_channel_with_its_payload() -> None:
    from shared.domain.events import INBOUND_TYPES

    document = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    for name in INBOUND_TYPES:
        assert f"pz:{{pN}}:inbox:{name}" in document["channels"]
        schema = document["components"]["schemas"][f"{name}Message"]
        assert {"type", "schema_version", "idempotency_key", "member_id", "payload"} <= set(
            schema["properties"]
        )


def test_every_rpc_its_replies_receipts_and_dead_letters_are_documented() -> None:
    document = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    channels, schemas = document["channels"], document["components"]["schemas"]
    for rpc in ("pz:rpc:resolve", "pz:rpc:profiles", "pz:rpc:grid"):
        assert rpc in channels and f"pz:reply:{{token}} ({rpc})" in channels
    assert {"ResolveResponse", "Listing", "GridReply", "GridRequest", "Receipt"} <= set(schemas)
    assert "pz:{pN}:receipt:{member_id}|{idempotency_key}" in channels
    assert "pz:rpc:dead" in channels


def test_inbound_payloads_do_not_offer_the_fields_ingest_derives() -> None:
    from shared.domain.events import INBOUND_TYPES, PAYLOADS

    document = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    schemas = document["components"]["schemas"]
    for name in INBOUND_TYPES:
        reference = schemas[f"{name}Message"]["properties"]["payload"]["$ref"]
        payload = schemas[reference.rsplit("/", 1)[1]]
        assert not PAYLOADS[name].DERIVED & set(payload["properties"]), name
