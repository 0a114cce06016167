"""s3rver (npm), an S3 stand-in that keeps objects on disk, for the durable broker's tests and the chaos bench.

``make servers`` installs it into ``.build/s3rver``; ``S3RVER`` names another executable. It accepts the
fixed credentials ``S3RVER``/``S3RVER``. On Node 20 it needs ``--openssl-legacy-provider`` to sign listings
over 1,000 objects, which Tansu's S3 storage makes quickly (one object per produce request).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from connectors.broker import _die_with_parent, _prctl, free_port

__all__ = ["S3rver", "s3rver_binary"]

_ROOT = Path(__file__).resolve().parents[2]
_INSTALL_HINT = "run `make servers` (npm install s3rver into .build/s3rver) or set S3RVER to its executable"


def s3rver_binary() -> Path:
    """The s3rver executable: ``$S3RVER``, the project's ``.build/s3rver``, or one on PATH."""
    for candidate in (os.environ.get("S3RVER"), _ROOT / ".build/s3rver/node_modules/.bin/s3rver", shutil.which("s3rver")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(f"s3rver is not installed: {_INSTALL_HINT}")


class S3rver:
    """One s3rver on a loopback port, storing under ``directory``; restartable on the same port and data.

    Parameters
    ----------
    directory
        Where objects are kept; a restart (or a SIGKILL and start) finds them again.
    bucket
        Created on start if missing.
    """

    def __init__(self, directory: Path, bucket: str = "tansu", port: int | None = None) -> None:
        self.directory = Path(directory)
        self.bucket = bucket
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables a client (the broker) needs to use this server."""
        return {
            "AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true",
        }

    def objects(self) -> int:
        """How many objects the bucket holds on disk (s3rver keeps one folder per object)."""
        root = self.directory / self.bucket
        return sum(1 for p in root.rglob("*._S3rver_object")) if root.exists() else 0

    def start(self, timeout: float = 30.0) -> S3rver:
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = [str(s3rver_binary()), "--directory", str(self.directory), "--address", "127.0.0.1",
               "--port", str(self.port), "--configure-bucket", self.bucket, "--silent"]
        env = {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}
        prctl, parent = _prctl(), os.getpid()  # like the broker: never outlive the process that started it
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, env=env, start_new_session=True,
                                      preexec_fn=lambda: _die_with_parent(prctl, parent))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"s3rver exited with {self._proc.returncode}: {err.strip()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"s3rver did not listen on {self.endpoint} within {timeout:.0f} s")

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would; the objects on disk stay."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> S3rver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
