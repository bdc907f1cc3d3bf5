"""Without ``REDIS_URL``, the settings describe the system ``make run`` started
(``data/run.json``, or ``PZ_RUN_FILE``), so ops tools act on it (issue 8, finding 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.settings import Settings, run_file, running_system

ADMIN = "redis://admin:secret@127.0.0.1:6390/0"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"redis_url": ADMIN, "publisher_url": "redis://p", "partitions": 8}))
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("PZ_PARTITIONS", raising=False)
    monkeypatch.setenv("PZ_RUN_FILE", str(path))
    return path


def test_the_process_environment_falls_back_to_the_running_system(run: Path) -> None:
    settings = Settings.from_env()
    assert (settings.redis_url, settings.partitions) == (ADMIN, 8)
    assert run_file() == run and running_system() is not None


def test_redis_url_and_pz_partitions_win_over_the_run_file(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PZ_PARTITIONS", "2")
    assert Settings.from_env().partitions == 2
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    assert Settings.from_env().redis_url == "redis://elsewhere:6379/0"


def test_no_run_file_or_a_broken_one_means_the_defaults(run: Path) -> None:
    run.write_text("{not json")
    assert Settings.from_env().redis_url == Settings.model_fields["redis_url"].default
    run.unlink()
    assert running_system() is None and Settings.from_env().partitions == 4


def test_the_default_run_file_is_data_run_json_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PZ_RUN_FILE", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "run.json").write_text(json.dumps({"redis_url": ADMIN}))
    assert Settings.from_env().redis_url == ADMIN


def test_an_explicit_environment_reads_a_run_file_only_when_it_names_one(run: Path) -> None:
    assert Settings.from_env({}).redis_url == Settings.model_fields["redis_url"].default
    assert Settings.from_env({"PZ_RUN_FILE": str(run)}).redis_url == ADMIN
