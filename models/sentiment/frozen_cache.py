"""The frozen encoder layers' outputs, kept on disk between training runs.

Running the frozen lower layers over every training sentence is the costliest step on a small shared CPU
(25 minutes for 27,000 sentences at a load average of 20 on 2 cores), and it gives the same tensors for
the same base encoder, frozen depth and batches of token ids. So they are saved once under
``data_dir()/frozen-cache`` (float16: 555 MB for 27,297 sentences) and a run that changes
only what is trained on top (epochs, learning rate, head) loads them instead. Only the ``KEEP`` files
written or loaded last stay (a load marks its file as used, so a test's small cache written after it does not
push out the default run's).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from models.sentiment.data import data_dir

KEEP = 2


def cache_key(base: str, frozen: int, pooled: bool, batches: list[list[list[int]]]) -> str:
    """A digest of everything the frozen outputs depend on.

    Parameters
    ----------
    base
        The base encoder's path or id.
    frozen
        How many lower layers run frozen.
    pooled
        Whether the cache holds mean-pooled embeddings (no trainable layer) or per-token hidden states.
    batches
        Per batch, its sentences' token ids, in batch order.
    """
    h = hashlib.blake2b(f"{Path(base).name}|{frozen}|{pooled}".encode(), digest_size=16)
    for batch in batches:
        for ids in batch:
            h.update(b",".join(str(i).encode() for i in ids) + b";")
        h.update(b"|")
    return h.hexdigest()


def load(key: str, folder: Path | None = None) -> list[tuple[Any, Any]] | None:
    """The cached outputs for ``key``, or ``None``.

    Parameters
    ----------
    key
        From ``cache_key``.
    folder
        Default ``data_dir()/frozen-cache``.
    """
    import torch

    path = (folder or data_dir() / "frozen-cache") / f"{key}.pt"
    if not path.is_file():
        return None
    try:
        outputs = torch.load(path, weights_only=True)
        path.touch()
        return outputs
    except (OSError, RuntimeError, EOFError):
        path.unlink(missing_ok=True)
        return None


def save(key: str, outputs: list[tuple[Any, Any]], folder: Path | None = None) -> Path:
    """Store ``outputs`` under ``key`` (written whole, then renamed) and drop all but the ``KEEP`` used last.

    Parameters
    ----------
    key
        From ``cache_key``.
    outputs
        Per batch, (hidden states or pooled embeddings, attention mask or ``None``).
    folder
        Default ``data_dir()/frozen-cache``.
    """
    import torch

    folder = folder or data_dir() / "frozen-cache"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{key}.pt.part"
    torch.save(outputs, tmp)
    tmp.replace(folder / f"{key}.pt")
    for old in sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime)[:-KEEP]:
        old.unlink(missing_ok=True)
    return folder / f"{key}.pt"
