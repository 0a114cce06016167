"""Which devices are canaries: a deterministic choice by hashing the device id with the rollout id.

The same rollout always picks the same devices (a restarted controller agrees with itself), and each
rollout picks a different slice of the fleet, so one unlucky device is not every rollout's canary.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable


def rank(rollout_id: str, device_id: str) -> int:
    """A device's place in a rollout's canary order: the first 8 bytes of SHA-256(rollout id, device id)."""
    return int.from_bytes(hashlib.sha256(f"{rollout_id}\0{device_id}".encode()).digest()[:8], "big")


def canary_share(percent: float) -> float:
    """``percent`` if it is a share a rollout can start with, else a ``ValueError`` that says what to give.

    Parameters
    ----------
    percent
        Between 0 (exclusive) and 100.

    Examples
    --------
    >>> from schemas.canary import canary_share
    >>> canary_share(10)
    10
    >>> canary_share(0)
    Traceback (most recent call last):
    ...
    ValueError: canary share 0% is not in (0, 100]; give e.g. --canary 10%
    """
    if not 0 < percent <= 100:
        raise ValueError(f"canary share {percent:g}% is not in (0, 100]; give e.g. --canary 10%")
    return percent


def choose_canaries(rollout_id: str, devices: Iterable[str], percent: float) -> list[str]:
    """The ``percent`` share of ``devices`` (rounded up, at least one) that ranks first for this rollout.

    Parameters
    ----------
    rollout_id
        The rollout.
    devices
        The device ids of the class the controller has heard from.
    percent
        Between 0 (exclusive) and 100 (``canary_share``).

    Examples
    --------
    >>> from schemas.canary import choose_canaries
    >>> fleet = [f"pi-{i}" for i in range(20)]
    >>> len(choose_canaries("r1", fleet, 10)), choose_canaries("r1", fleet, 10) == choose_canaries("r1", fleet[::-1], 10)
    (2, True)
    """
    canary_share(percent)
    fleet = sorted(set(devices), key=lambda d: rank(rollout_id, d))
    if not fleet:
        return []
    return fleet[: max(1, math.ceil(len(fleet) * percent / 100 - 1e-9))]
