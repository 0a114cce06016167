"""The kernels' on-disk cache is filed under the sources a process imported, not those on disk at its first compile."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _digest(package: Path) -> str:
    digest = hashlib.sha256()
    for source in sorted(package.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def test_a_process_upgraded_in_place_files_its_kernels_under_the_sources_it_imported(tmp_path: Path) -> None:
    """The digest was read at the first compile: a flow that imported the detectors, then saw the package upgraded
    on disk before its first device, compiled its old steps into the new version's folder, and every process of
    the new version ran those stale kernels (a fixed step silently not applied)."""
    shutil.copytree(ROOT / "models", tmp_path / "models", ignore=shutil.ignore_patterns("__pycache__"))
    package = tmp_path / "models" / "anomaly"
    imported = _digest(package)
    script = (
        "import numpy as np\n"
        "import models.anomaly as a\n"
        f"open({str(package / '_steps.py')!r}, 'a').write('# upgraded in place\\n')\n"
        "a.make_detector('gauss').score_learn(np.ones(3), np.arange(3))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, timeout=300)
    assert _digest(package) != imported
    assert [p.name for p in (tmp_path / "cache" / "eddyline" / "numba").iterdir()] == [imported]
