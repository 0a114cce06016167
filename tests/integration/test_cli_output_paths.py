"""A file a command writes at the end of its run is checked at its start: a typo in its folder must not cost the
run, nor send a producer's events a second time when the command is run again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.kafka import KafkaSettings, make_admin
from streams.cli import app

pytestmark = pytest.mark.integration


def _env(kafka: KafkaSettings) -> dict[str, str]:
    return {"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "EDDYLINE_KAFKA_NAMESPACE": kafka.namespace}


def test_the_truth_file_of_a_producer_run_goes_to_a_folder_that_did_not_exist_yet(kafka_settings: KafkaSettings,
                                                                                  tmp_path: Path) -> None:
    truth = tmp_path / "runs" / "today" / "truth.json"
    result = CliRunner().invoke(app, ["produce", "sensors", "--count", "2", "--rate", "0", "--truth", str(truth)],
                                env=_env(kafka_settings))
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(truth.read_text()), list)


def test_a_truth_path_that_cannot_be_written_is_refused_before_anything_is_sent(kafka_settings: KafkaSettings,
                                                                               tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("a file, not a folder")
    for path, named in ((tmp_path / "notes" / "truth.json", tmp_path / "notes"), (tmp_path, tmp_path)):
        result = CliRunner().invoke(app, ["produce", "sensors", "--count", "2", "--rate", "0", "--truth", str(path)],
                                    env=_env(kafka_settings))
        assert result.exit_code == 2, result.output
        assert "--truth" in result.output, result.output
        assert f"{named} (a file" in result.output or f"{named} is a folder" in result.output, result.output
    topics = make_admin(kafka_settings).list_topics(timeout=10).topics
    assert kafka_settings.topic("sensor.readings") not in topics  # nothing was produced


def test_a_truth_folder_that_takes_no_file_is_refused_before_anything_is_sent(kafka_settings: KafkaSettings) -> None:
    """The check made the folder but never wrote in it: a folder of another user's (or a read-only disk) took the
    whole run, then refused the truth file, and running the command again sent its events twice."""
    locked = Path(tempfile.mkdtemp())  # not under tmp_path: the user it runs as must reach it
    locked.chmod(0o555)
    command = [sys.executable, "-m", "streams.cli", "produce", "sensors", "--count", "2", "--rate", "0",
               "--truth", str(locked / "truth.json")]
    if os.geteuid() == 0:  # root writes in any folder: run as nobody
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and without setpriv to run as another user")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    try:
        result = subprocess.run(command, env={**os.environ, **_env(kafka_settings)}, capture_output=True, text=True,
                                timeout=120)
    finally:
        locked.chmod(0o755)
        shutil.rmtree(locked)
    assert result.returncode == 2 and f"cannot write {locked / 'truth.json'}" in result.stderr, result.stderr
    assert kafka_settings.topic("sensor.readings") not in make_admin(kafka_settings).list_topics(timeout=10).topics
