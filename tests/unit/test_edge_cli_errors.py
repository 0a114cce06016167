"""``eddyline-edge`` fails as the platform's CLI does: one line that names the path and says what to do, exit 2;
Ctrl-C stops it with a line, exit 130. Never a backtrace: on a device it lands in the journal, read by whoever
is on call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli import main


@pytest.mark.parametrize("args", [
    lambda tmp: ["build-model", "--out", str(tmp / "m.onnx"), "--csv", str(tmp)],  # a folder for a file
    lambda tmp: ["build-model", "--out", str(tmp / "file" / "m.onnx")],  # a file where a folder must be
    lambda tmp: ["build-model", "--out", str(tmp / "m.onnx"), "--csv", str(tmp / "readings.csv")],  # no such file
], ids=["csv-is-a-folder", "out-under-a-file", "csv-missing"])
def test_a_path_that_cannot_be_used_names_it_and_says_what_to_do(args, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("not a folder")
    assert main(args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "check the path and its permissions" in err and str(tmp_path) in err, err


def test_ctrl_c_stops_a_command_with_a_line_not_a_backtrace(tmp_path: Path) -> None:
    """A real SIGINT, sent while the model is being built (the long part of ``build-model --optimise``)."""
    script = ("import os, signal, sys, time\n"
              "from edge_agent.inference import model\n"
              "def build(*args, **kwargs):\n"
              "    os.kill(os.getpid(), signal.SIGINT)\n"
              "    time.sleep(60)\n"
              "model.build_model = build\n"
              "from edge_agent.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, "build-model", "--out", str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "eddyline-edge: build-model interrupted" in done.stderr and "Traceback" not in done.stderr, done.stderr
