"""Event ids: random for new events, derived for outputs so that a replay yields the same ids."""

from __future__ import annotations

import hashlib
import uuid


def new_id() -> str:
    """A random id for a new event (32 hex digits); a retry of the same event must reuse it, not call this again.

    Examples
    --------
    >>> from schemas import new_id
    >>> len(new_id()), new_id() != new_id()
    (32, True)
    """
    return uuid.uuid4().hex


def derive_id(*parts: object) -> str:
    """A stable id from the input's identity: the same parts always give the same id.

    Outputs take their ids from this, so a replay after a crash repeats them and sinks drop the repeats.

    Parameters
    ----------
    parts
        What identifies the output: usually the output topic and the input's event id, plus whatever
        tells apart several outputs of one input. Parts are compared as text; one holding the separator
        (``\\x1f``, from a producer's id) is escaped so it cannot pass for two parts, and the id of parts
        without ``\\x1e``/``\\x1f`` stays what it always was (a replay across an upgrade repeats it).

    Examples
    --------
    >>> from schemas import derive_id
    >>> derive_id("scores.anomaly", "batch-1") == derive_id("scores.anomaly", "batch-1")
    True
    >>> derive_id("scores.anomaly", "batch-1") == derive_id("alerts", "batch-1")
    False
    >>> len(derive_id("x"))
    32
    """
    texts = [str(p) for p in parts]
    if any("\x1f" in t or "\x1e" in t for t in texts):  # escaped, so that parts holding the separator cannot collide
        texts = [t.replace("\x1e", "\x1e\x1e").replace("\x1f", "\x1e\x1f") for t in texts]
    return hashlib.blake2b("\x1f".join(texts).encode(errors="surrogatepass"), digest_size=16).hexdigest()
