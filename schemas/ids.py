"""Event ids: random for new events, derived for outputs so that a replay yields the same ids."""

from __future__ import annotations

import hashlib
import uuid


def new_id() -> str:
    return uuid.uuid4().hex


def derive_id(*parts: object) -> str:
    """A stable id from the input's identity: the same parts always give the same id."""
    joined = "\x1f".join(str(p) for p in parts)
    return hashlib.blake2b(joined.encode(), digest_size=16).hexdigest()
