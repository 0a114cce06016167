"""Variants of the detectors tried for issue 14 and scored by cross-validation, rerunnable from the repository.

Why a patch and not parameters in ``models/anomaly``: none of these won under cross-validation
(BENCHMARKS-nab.md, "Detectors that generalise"), and production should not carry switches that are off.
So each variant is a text patch applied to a copy of a detector module's source at run time; every patch checks
that its anchor occurs exactly once, so a change to the detector stops this module with a clear error
instead of measuring something else. With every new parameter at its neutral value the patched detector
scores bit for bit like the production one (tests/unit/test_nab_variants.py).

Options of rounds 6 and 7, in production until round 8 and moved here because they lost the gate
(``OPTIONS``: ``seasonal``, ``robust`` and ``likelihood`` where they apply):

- ``ratio_max`` (round 6, ``seasonal``): while the seasonal model's recent squared error is between ``ratio`` and
  ``ratio_max`` times the global one (better, but not clearly), the larger of the seasonal and the global score
  speaks; 0: off.
- ``novelty_sd`` (round 7): a new extreme alarms only if it also clears the range by this many long-run standard
  deviations; every new extreme still counts into the novelty rate; 0: off.
- ``log_surprise`` (round 7): 1: each likelihood layer averages the log surprise ``-ln P(|Z| >= z)`` (capped at
  ``LOG_CAP``) instead of the Gaussian tail, which is bounded by 1; 0: off.

What each ``seasonal`` patch of round 3 and 6 adds (all parameters default to "off"):

- ``confirm``: the seasonal score speaks only after its model has been predicting better than the global one
  (the ``ratio`` test) for ``confirm`` periods in a row (one more scalar, ``s_since``).
- ``sv_alpha``, ``var_mix``: a residual variance per slot (EWMA rate ``sv_alpha`` per visit), mixed
  ``var_mix : 1 - var_mix`` with the series-wide one: busy hours may be noisier than quiet ones.
- ``mix``, ``zg``: the seasonal likelihood layer is fed ``(1 - mix)`` times the seasonal surprise plus ``mix``
  times the global one (at ``z / zg``): several raw scores averaged, HTM-style, instead of replaced.
- ``zext``, ``fast``: a second global likelihood layer averaging only ``fast`` surprises; its score counts
  (by max) while the reading is at least ``zext`` long-run sigmas out: an earlier alarm when it is extreme.
- ``spike_gate``: on a series whose seasonal score speaks, a spike alarms only if it is also at least
  ``spike_gate`` sigmas from its slot's expected value.
- ``rearm``, ``rearm_level``: the alarm hold ends early once the score has stayed below ``rearm_level`` for
  ``rearm`` readings in a row (the incident is over, so the next alarm is a new one; one more scalar).
- ``bonf`` (round 6, with the option ``ratio_max``): where both the seasonal and the global
  score speak, their larger one is corrected for two chances to be surprised (``1 - 2 (1 - max)``).
- ``ar`` (round 6): the global surprise is measured against an AR(1) prediction, ``mean + phi (previous -
  mean)`` with ``phi`` the series' running lag-1 autocorrelation, instead of the level, while that prediction's
  recent squared error is below ``ar`` times the level's (four more scalars): which predictor has been
  predicting the series best lately, label-free.
- Round 8's prototypes, each off at 0: ``daytype`` (1: the second table is a day-type one, time of day on weekdays
  and on weekends, instead of the weekly one), ``slot_ms`` (seasonal slots at least this wide), ``wins`` (the
  global EWMA learns readings winsorised at this many of its sigmas), ``nov_z`` (a new extreme alarms only when
  also this many long-run sigmas from the level); and round 8's idea, ``nov_ms``: the novelty rate decays in time,
  by ``exp(-gap / nov_ms)`` per reading, instead of by ``1 - novelty_alpha`` per reading (with ``nov_young`` 1,
  only once the series has lived ``nov_ms``).
- Round 9's repairs of ``nov_ms`` for young and finely sampled series, each off at 0: ``nov_age`` (the memory at
  most that fraction of the series' age), ``nov_chance`` (the rate counts records beyond the chance a stationary
  series of that age sets one), ``nov_far`` (a record beyond the range by more than that fraction of its width
  alarms even while novelty is muted) and ``nov_n`` (the memory also at most that many readings).
  ``simulator_check`` is round 8's simulator check for any of them.
- Round 10's ``phase`` and ``phase_var`` (each off at 0): the reading's place within its seasonal slot; with ``phase``
  1 the expected value moves along the cycle's local slope by the reading's offset from the usual place, with
  ``phase_var`` v the offset's variance times the slope squared widens the seasonal residual's scale. Regularly
  sampled series score bit for bit as without them. And ``tail_k``, ``tail_max`` (``tail_k`` 0: off): the raw spike
  rule is muted while readings ``tail_k`` robust sigmas out are routine for the series (their rate at least
  ``tail_max``). Both lost the gate (BENCHMARKS-nab.md, round 10).

Besides the variants, two selection rules over ``seasonal``'s ``--cv`` grid (``benchmarks.nab.GRIDS``):
nested CV (each fold chooses its grid point by a leave-one-category-out CV of its own four categories) and a
vote (a grid point replaces the defaults only if it beats them on at least ``k`` of the four); and the
``--cv`` protocol over a grid moved to a longer hold that ends with the incident (``rearm``, ``REARM_GRID``).

    python -m benchmarks.nab_variants --data ../shared/data/nab --json variants.json
    python -m benchmarks.nab_variants --data ../shared/data/nab --round 6    # round 6's rows and grids only
    python -m benchmarks.nab_variants --data ../shared/data/nab --round 7    # round 7's dev rows (grid CV)
    python -m benchmarks.nab_variants --data ../shared/data/nab --round 9    # round 9's rows, grids, simulator
    python -m benchmarks.nab_variants --data ../shared/data/nab --round 10   # round 10's rows, grids, robustness

The patched classes are also what ``benchmarks.nab_synthetic`` scores for a label ``NAME-variants@...``
(``seasonal-variants@log_surprise=1,novelty_sd=2``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

import models.anomaly
from benchmarks import nab_robustness
from benchmarks.nab import GRIDS, grid_scores, load_corpus
from models.evaluation import cv, nab

Patch = list[tuple[str, str]]

# The round 6-7 options, per detector module. Off (0), each scores bit for bit like the production detector.
_SIGNATURE = "        threshold: float = 0.999,\n    ) -> None:"
_LAYER: Patch = [
    ("gauss_tail(z), min(k, H) >= 10", "surprise(z, log_s), min(k, H) >= 10"),
    (_SIGNATURE, "        novelty_sd: float = 0.0,\n        log_surprise: int = 0,\n" + _SIGNATURE),
]
_WINDOWED: Patch = [
    ("    rate_a, rate_max = p[PARAM.rate_alpha], p[PARAM.rate_max]\n",
     "    rate_a, rate_max = p[PARAM.rate_alpha], p[PARAM.rate_max]\n"
     "    nov_sd, log_s = p[PARAM.novelty_sd], p[PARAM.log_surprise]\n"),
    ("        novel = k >= 1 and is_novel(x, mn, mx, tol)\n",
     "        record = k >= 1 and is_novel(x, mn, mx, tol)\n"
     "        novel = record and is_novel_by(x, mn, mx, tol, nov_sd * sd_long)\n"),
    ("nrate += nov_a * ((1.0 if novel else 0.0) - nrate)", "nrate += nov_a * ((1.0 if record else 0.0) - nrate)"),
]
OPTIONS: dict[str, Patch] = {
    "likelihood": [
        *_LAYER,
        ('"hold", "warmup")', '"hold", "warmup", "novelty_sd", "log_surprise")'),
        ("    warm = p[PARAM.warmup]\n",
         "    warm, nov_sd, log_s = p[PARAM.warmup], p[PARAM.novelty_sd], p[PARAM.log_surprise]\n"),
        ("if is_novel(x, mn, mx, tol):", "if is_novel_by(x, mn, mx, tol, nov_sd * math.sqrt(var)):"),
        ("        check_fraction(damp=damp)\n",
         "        check_at_least(0, novelty_sd=novelty_sd)\n        check_fraction(damp=damp)\n"),
    ],
    "robust": [
        *_LAYER, *_WINDOWED,
        ('"novelty_alpha", "novelty_max")', '"novelty_alpha", "novelty_max", "novelty_sd", "log_surprise")'),
        ("        check_fraction(damp=damp)\n",
         "        check_at_least(0, novelty_sd=novelty_sd)\n        check_fraction(damp=damp)\n"),
    ],
    "seasonal": [
        *_LAYER, *_WINDOWED,
        ('"period2_ms", "stuck", "counts")',
         '"period2_ms", "stuck", "counts", "ratio_max", "novelty_sd", "log_surprise")'),
        (_SIGNATURE, "        ratio_max: float = 0.0,\n" + _SIGNATURE),
        ("        check_fraction(damp=damp)\n",
         "        check_at_least(0, novelty_sd=novelty_sd, ratio_max=ratio_max)\n        check_fraction(damp=damp)\n"),
        ("    ratio, err_a = p[PARAM.ratio], p[PARAM.err_alpha]\n",
         "    ratio, err_a = p[PARAM.ratio], p[PARAM.err_alpha]\n    ratio_max = max(ratio, p[PARAM.ratio_max])\n"),
        ("            replace = best_err < ratio * glob_err\n"
         "            ready = kk >= best_ns and (replace or mode == 1)\n",
         "            ready = kk >= best_ns and (best_err < ratio_max * glob_err or mode == 1)\n"
         "            replace = best_err < ratio * glob_err\n"),
        ("gauss_tail(best_z / zscale),", "surprise(best_z / zscale, log_s),"),
    ],
}
# Compiled steps the options use, appended to the patched module (kernels compile on first use, after it loaded).
OPTION_STEPS = '''
from models.anomaly._jit import lazy_inline as _inline  # noqa: E402
from models.anomaly._steps import gauss_tail as _tail  # noqa: E402

LOG_CAP = -math.log(1e-12)  # one reading's log surprise at most that of a 7-sigma deviation
_SQRT2 = math.sqrt(2.0)


@_inline
def surprise(z, log):  # pragma: no cover - compiled
    """The Gaussian tail (``log`` 0), or ``-ln P(|Z| >= z)`` capped at ``LOG_CAP`` (``log`` 1)."""
    if log == 0.0:
        return _tail(z)
    return min(-math.log(max(math.erfc(z / _SQRT2), 1e-300)), LOG_CAP)


@_inline
def is_novel_by(x, mn, mx, tol, margin):  # pragma: no cover - compiled
    """``is_novel`` with the range also cleared by ``margin``."""
    pad = tol * (mx - mn)
    if margin > pad:
        pad = margin
    return x > mx + pad or x < mn - pad
'''
CLASSES = {"likelihood": "LikelihoodDetector", "robust": "RobustLikelihoodDetector", "seasonal": "SeasonalDetector"}

PATCHES: dict[str, Patch] = {
    "params": [
        ('"ratio_max", "novelty_sd", "log_surprise")\nPARAM', '"ratio_max", "novelty_sd", "log_surprise", "confirm", "sv_alpha", "var_mix", "mix", "zg", "zext", "fast", '
                                 '"spike_gate", "rearm", "rearm_level", "bonf", "ar")\nPARAM'),
        ('"seas_err2", "res_n2", "run_max", "count_n")', '"seas_err2", "res_n2", "run_max", "count_n", "s_since", "f_ssum", "f_hsum", "f_hsq", "quiet", '
                                                      '"ar_c1", "ar_px", "err_lvl", "err_ar")'),
        ("        threshold: float = 0.999,\n    ) -> None:",
         "        confirm: float = 0.0,\n        sv_alpha: float = 0.0,\n        var_mix: float = 0.5,\n"
         "        mix: float = 0.0,\n        zg: float = 1.0,\n        zext: float = 0.0,\n        fast: int = 3,\n"
         "        spike_gate: float = 0.0,\n        rearm: int = 0,\n        rearm_level: float = 0.5,\n"
         "        bonf: float = 0.0,\n        ar: float = 0.0,\n"
         "        threshold: float = 0.999,\n    ) -> None:"),
        ("    M = 2 if period2 > 0 else 1\n",
         "    M = 2 if period2 > 0 else 1\n    confirm, sv_a, var_mix = p[PARAM.confirm], p[PARAM.sv_alpha], p[PARAM.var_mix]\n"
         "    mix, zg, zext, KF = p[PARAM.mix], p[PARAM.zg], p[PARAM.zext], int(p[PARAM.fast])\n"
         "    spike_gate, rearm, rearm_level = p[PARAM.spike_gate], p[PARAM.rearm], p[PARAM.rearm_level]\n"
         "    bonf, ar = p[PARAM.bonf], p[PARAM.ar]\n"
         "    ar_c1, ar_px, err_lvl, err_ar = st[STATE.ar_c1], st[STATE.ar_px], st[STATE.err_lvl], st[STATE.err_ar]\n"),
    ],
    "buffers": [
        ('BUFFERS = ("short", "hist", "window", *SEASONAL_BUFFERS)',
         'BUFFERS = ("short", "hist", "window", "f_short", "f_hist", *SEASONAL_BUFFERS)'),
        ('SEASONAL_BUFFERS = ("slot_mean", "slot_seen", "slot_mean2", "slot_seen2",',
         'SEASONAL_BUFFERS = ("slot_mean", "slot_seen", "slot_mean2", "slot_seen2", "slot_var", "slot_var2",'),
        ('"window": ("<f8", (self.window,))}\n        ns, ns2',
         '"window": ("<f8", (self.window,)),\n                  "f_short": ("<f8", (self.fast,)),\n'
         '                  "f_hist": ("<f8", (history_rows(self.history, self.history_block), 2))}\n        ns, ns2'),
        ('            "slot_seen2": ("<i8", (bit_words(ns2),)),\n',
         '            "slot_seen2": ("<i8", (bit_words(ns2),)),\n'
         '            "slot_var": ("<f8", (ns if self.sv_alpha > 0 else 0,)),\n'
         '            "slot_var2": ("<f8", (ns2 if self.sv_alpha > 0 else 0,)),\n'),
        ('self._views(["short", "hist", "window"])', 'self._views(["short", "hist", "window", "f_short", "f_hist"])'),
        ("    spike_last = part(mem, p, PARAM.at_spike_last)\n",
         "    spike_last = part(mem, p, PARAM.at_spike_last)\n"
         "    slot_var, slot_var2 = part(mem, p, PARAM.at_slot_var), part(mem, p, PARAM.at_slot_var2)\n"
         "    f_short, f_hist = part(mem, p, PARAM.at_f_short), part(mem, p, PARAM.at_f_hist)\n"),
    ],
    "slot variance": [
        ("            if rn >= ns and k >= 2:\n                zs = surprise_z(r, math.sqrt(rv), mean)",
         "            vu = rv\n"
         "            if sv_a > 0.0:\n"
         "                svt = slot_var if m == 0 else slot_var2\n"
         "                vs = svt[sl]\n"
         "                if vs > 0.0:\n"
         "                    vu = var_mix * vs + (1.0 - var_mix) * rv\n"
         "                rq = min(r * r, clip * clip * vu) if rn >= ns else r * r\n"
         "                svt[sl] = vs + sv_a * (rq - vs) if vs > 0.0 else max(rv, 1e-300)\n"
         "            if rn >= ns and k >= 2:\n                zs = surprise_z(r, math.sqrt(vu), mean)"),
    ],
    "confirm and mix": [
        ("            ready = kk >= best_ns and (best_err < ratio_max * glob_err or mode == 1)\n"
         "            replace = best_err < ratio * glob_err\n"
         "            s_lik, s_ssum, s_hsum, s_hsq = likelihood_step(s_short, s_hist, K, H, B, kk, surprise(best_z / zscale, log_s),",
         "            ready = kk >= best_ns and (best_err < ratio_max * glob_err or mode == 1)\n"
         "            replace = best_err < ratio * glob_err\n"
         "            if best_err < ratio * glob_err:\n"
         "                if st[STATE.s_since] == 0.0:\n"
         "                    st[STATE.s_since] = ts + 1.0\n"
         "            else:\n"
         "                st[STATE.s_since] = 0.0\n"
         "            if confirm > 0.0 and ready and ts + 1.0 - st[STATE.s_since] < confirm * best_ns * step:\n"
         "                ready = False\n"
         "            raw_s = surprise(best_z / zscale, log_s)\n"
         "            if mix > 0.0:\n"
         "                raw_s = (1.0 - mix) * raw_s + mix * surprise(z / zg, log_s)\n"
         "            s_lik, s_ssum, s_hsum, s_hsq = likelihood_step(s_short, s_hist, K, H, B, kk, raw_s,"),
    ],
    "bonferroni": [
        ("        if mode == 0 and s_lik > 0.0 and replace:\n            s = s_lik\n",
         "        if mode == 0 and s_lik > 0.0 and replace:\n            s = s_lik\n"
         "        elif mode == 0 and s_lik > 0.0 and bonf > 0.0:\n"
         "            s = max(0.0, 1.0 - 2.0 * (1.0 - max(s, s_lik)))\n"),
    ],
    "ar predictor": [
        ("        z = surprise_z(x - mean, sd_long, mean) if k >= 2 else 0.0\n",
         "        z = surprise_z(x - mean, sd_long, mean) if k >= 2 else 0.0\n"
         "        if ar > 0.0 and k >= 2:\n"
         "            phi = min(max(ar_c1 / var, 0.0), 0.99) if var > 0.0 else 0.0\n"
         "            e_ar = x - mean - phi * (ar_px - mean)\n"
         "            if k > warm and err_ar < ar * err_lvl:\n"
         "                z = surprise_z(e_ar, sd_long * math.sqrt(1.0 - phi * phi), mean)\n"
         "            err_lvl += err_a * ((x - mean) * (x - mean) - err_lvl)\n"
         "            err_ar += err_a * (e_ar * e_ar - err_ar)\n"
         "        if k >= 1:\n"
         "            ar_c1 += max(alpha, 1.0 / (n + 1.0)) * ((x - mean) * (ar_px - mean) - ar_c1)\n"
         "        ar_px = x\n"),
        ("    st[STATE.zmax], st[STATE.run_max], st[STATE.count_n] = zmax, run_max, count_n\n",
         "    st[STATE.zmax], st[STATE.run_max], st[STATE.count_n] = zmax, run_max, count_n\n"
         "    st[STATE.ar_c1], st[STATE.ar_px], st[STATE.err_lvl], st[STATE.err_ar] = ar_c1, ar_px, err_lvl, err_ar\n"),
    ],
    "fast layer": [
        ("        else:\n            s = max(s, s_lik)\n",
         "        else:\n            s = max(s, s_lik)\n"
         "        if zext > 0.0:\n"
         "            fs, st[STATE.f_ssum], st[STATE.f_hsum], st[STATE.f_hsq] = likelihood_step(\n"
         "                f_short, f_hist, KF, H, B, k, surprise(z, log_s), min(k, H) >= 10, st[STATE.f_ssum],\n"
         "                st[STATE.f_hsum], st[STATE.f_hsq])\n"
         "            if z >= zext:\n"
         "                s = max(s, fs)\n"),
    ],
    "spike gate": [
        ("                spiked = ex and rate < rate_max and bigger\n",
         "                spiked = ex and rate < rate_max and bigger\n"
         "                if spiked and spike_gate > 0.0 and s_lik > 0.0 and best_z < spike_gate:\n"
         "                    spiked = False\n"),
    ],
    "rearm": [
        ("        out[i], left = hold_alarm(s, spiked, left, tau, hold, damp)\n",
         "        if rearm > 0.0 and left > 0:\n"
         "            st[STATE.quiet] = st[STATE.quiet] + 1.0 if s < rearm_level else 0.0\n"
         "            if st[STATE.quiet] >= rearm:\n"
         "                left = 0\n"
         "                st[STATE.quiet] = 0.0\n"
         "        out[i], left = hold_alarm(s, spiked, left, tau, hold, damp)\n"),
    ],
}

# Round 8 (session 8): a day-type table in place of the weekly one.
PATCHES["day type"] = [
    ('"bonf", "ar")\nPARAM', '"bonf", "ar", "daytype")\nPARAM'),
    ("        ar: float = 0.0,\n", "        ar: float = 0.0,\n        daytype: int = 0,\n"),
    ("    bonf, ar = p[PARAM.bonf], p[PARAM.ar]\n",
     "    bonf, ar, daytype = p[PARAM.bonf], p[PARAM.ar], p[PARAM.daytype]\n"),
    ("            ns = cycle_slots(period if m == 0 else period2, step, S)\n            slots_m[m] = -1\n",
     "            ns = cycle_slots(period if m == 0 else period2, step, S)\n"
     "            if m == 1 and daytype > 0.0:\n"
     "                ns = 2 * cycle_slots(period, step, S)\n"
     "            slots_m[m] = -1\n"),
    ("            sl = int((ts % (period if m == 0 else period2)) / step)\n",
     "            sl = int((ts % (period if m == 0 else period2)) / step)\n"
     "            if m == 1 and daytype > 0.0:\n"
     "                sl = min(int((ts % period) / step), ns // 2 - 1)\n"
     "                if (int(ts // period) + 3) % 7 >= 5:\n"
     "                    sl += ns // 2\n"),
    ("        return (cycle_slots.py_func(float(self.period_ms), step, self.slots),\n",
     "        if self.daytype:\n"
     "            day = cycle_slots.py_func(float(self.period_ms), step, self.slots)\n"
     "            return day, 2 * day\n"
     "        return (cycle_slots.py_func(float(self.period_ms), step, self.slots),\n"),
]

# Round 8: seasonal slots at least ``slot_ms`` wide (when the sampling step gives a cycle at all).
PATCHES["slot width"] = [
    ('"ar", "daytype")\nPARAM', '"ar", "daytype", "slot_ms")\nPARAM'),
    ("        daytype: int = 0,\n", "        daytype: int = 0,\n        slot_ms: float = 0.0,\n"),
    ("    bonf, ar, daytype = p[PARAM.bonf], p[PARAM.ar], p[PARAM.daytype]\n",
     "    bonf, ar, daytype = p[PARAM.bonf], p[PARAM.ar], p[PARAM.daytype]\n    slot_ms = p[PARAM.slot_ms]\n"),
    ("        seasonal = cycle_slots(period, step, S) > 0\n",
     "        seasonal = cycle_slots(period, step, S) > 0\n        wstep = max(step, slot_ms) if seasonal else step\n"),
    ("            ns = cycle_slots(period if m == 0 else period2, step, S)\n",
     "            ns = cycle_slots(period if m == 0 else period2, wstep, S)\n"),
    ("            sl = int((ts % (period if m == 0 else period2)) / step)\n",
     "            sl = int((ts % (period if m == 0 else period2)) / wstep)\n"),
    ('        """Slots of the first and the second period at sampling step ``step`` (0: no usable cycle)."""\n',
     '        """Slots of the first and the second period at sampling step ``step`` (0: no usable cycle)."""\n'
     "        if self.slot_ms and cycle_slots.py_func(float(self.period_ms), step, self.slots):\n"
     "            step = max(step, float(self.slot_ms))\n"),
]

# Round 8: the global EWMA learns each reading winsorised at ``wins`` of its standard deviations.
PATCHES["winsorised level"] = [
    ('"daytype", "slot_ms")\nPARAM', '"daytype", "slot_ms", "wins")\nPARAM'),
    ("        slot_ms: float = 0.0,\n", "        slot_ms: float = 0.0,\n        wins: float = 0.0,\n"),
    ("    slot_ms = p[PARAM.slot_ms]\n", "    slot_ms, wins = p[PARAM.slot_ms], p[PARAM.wins]\n"),
    ("        mean, var = ewma_learn(x, n, mean, var, alpha)\n",
     "        xl = x\n"
     "        if wins > 0.0 and k > warm:\n"
     "            lim = wins * math.sqrt(var)\n"
     "            xl = min(max(x, mean - lim), mean + lim)\n"
     "        mean, var = ewma_learn(xl, n, mean, var, alpha)\n"),
]

# Round 8: a new extreme alarms only when it is also at least ``nov_z`` long-run sigmas from the level.
PATCHES["surprising novelty"] = [
    ('"slot_ms", "wins")\nPARAM', '"slot_ms", "wins", "nov_z")\nPARAM'),
    ("        wins: float = 0.0,\n", "        wins: float = 0.0,\n        nov_z: float = 0.0,\n"),
    ("    slot_ms, wins = p[PARAM.slot_ms], p[PARAM.wins]\n",
     "    slot_ms, wins, nov_z = p[PARAM.slot_ms], p[PARAM.wins], p[PARAM.nov_z]\n"),
    ("            if novel and nrate < nov_max:\n", "            if novel and nrate < nov_max and z >= nov_z:\n"),
]

# Round 8's idea: the novelty rate decays in time, by exp(-gap / nov_ms) per reading, instead of by
# (1 - novelty_alpha) per reading; a record adds novelty_alpha, and a new extreme alarms while the rate is below
# novelty_max. It won the dev-CV gate but missed an obvious spike on a young 1-minute series (BENCHMARKS-nab.md);
# with ``nov_young`` 1 it applies only once the series has lived ``nov_ms`` (``n * step``), which lost the gate.
PATCHES["novelty memory in time"] = [
    ('"wins", "nov_z")\nPARAM', '"wins", "nov_z", "nov_ms", "nov_young")\nPARAM'),
    ("        nov_z: float = 0.0,\n",
     "        nov_z: float = 0.0,\n        nov_ms: float = 0.0,\n        nov_young: int = 0,\n"),
    ("    slot_ms, wins, nov_z = p[PARAM.slot_ms], p[PARAM.wins], p[PARAM.nov_z]\n",
     "    slot_ms, wins, nov_z, nov_ms = p[PARAM.slot_ms], p[PARAM.wins], p[PARAM.nov_z], p[PARAM.nov_ms]\n"
     "    nov_young = p[PARAM.nov_young]\n"),
    ("        prev_ts = ts\n", "        gap_n = ts - prev_ts if k >= 1 else 0.0\n        prev_ts = ts\n"),
    ("        nrate += nov_a * ((1.0 if record else 0.0) - nrate)\n",
     "        if nov_ms > 0.0 and (nov_young == 0.0 or n * step >= nov_ms):\n"
     "            nrate = nrate * math.exp(-max(gap_n, 0.0) / nov_ms) + (nov_a if record else 0.0)\n"
     "        else:\n"
     "            nrate += nov_a * ((1.0 if record else 0.0) - nrate)\n"),
]

# Round 9: two repairs of ``nov_ms`` for young series (each 0: off). ``nov_age`` c: the memory is at most c times the
# series' age (``n * step``): a series cannot tell records of its youth from routine ones over a span longer than it
# has lived. ``nov_chance`` 1: from the end of warm-up, each reading takes from the rate the chance that a series of
# its age sets a record by luck alone (``2 / (k + 1)`` for exchangeable readings), and records in warm-up do not
# count: the rate counts records beyond what a young, stationary series sets while it explores its range.
PATCHES["young novelty"] = [
    ('"nov_ms", "nov_young")\nPARAM', '"nov_ms", "nov_young", "nov_age", "nov_chance")\nPARAM'),
    ("        nov_young: int = 0,\n",
     "        nov_young: int = 0,\n        nov_age: float = 0.0,\n        nov_chance: float = 0.0,\n"),
    ("    nov_young = p[PARAM.nov_young]\n",
     "    nov_young, nov_age, nov_chance = p[PARAM.nov_young], p[PARAM.nov_age], p[PARAM.nov_chance]\n"),
    ("            nrate = nrate * math.exp(-max(gap_n, 0.0) / nov_ms) + (nov_a if record else 0.0)\n",
     "            tau_n = min(nov_ms, max(nov_age * n * step, 1.0)) if nov_age > 0.0 else nov_ms\n"
     "            inc = 1.0 if record else 0.0\n"
     "            if nov_chance > 0.0:\n"
     "                inc = inc - nov_chance * 2.0 / (k + 1.0) if k > warm else 0.0\n"
     "            nrate = nrate * math.exp(-max(gap_n, 0.0) / tau_n) + nov_a * inc\n"),
]
# Round 9, third: ``nov_far`` f (0: off): a new extreme beyond the range by more than f of its width alarms even
# while the rate mutes novelty: drift, trends and a young series' exploration extend the range a little at a time,
# a fault jumps far past it.
PATCHES["far novelty"] = [
    ('"nov_age", "nov_chance")\nPARAM', '"nov_age", "nov_chance", "nov_far")\nPARAM'),
    ("        nov_chance: float = 0.0,\n", "        nov_chance: float = 0.0,\n        nov_far: float = 0.0,\n"),
    ("    nov_young, nov_age, nov_chance = p[PARAM.nov_young], p[PARAM.nov_age], p[PARAM.nov_chance]\n",
     "    nov_young, nov_age, nov_chance = p[PARAM.nov_young], p[PARAM.nov_age], p[PARAM.nov_chance]\n"
     "    nov_far = p[PARAM.nov_far]\n"),
    ("            if novel and nrate < nov_max and z >= nov_z:\n",
     "            if novel and z >= nov_z and (nrate < nov_max or (nov_far > 0.0 and is_novel(x, mn, mx, nov_far))):\n"),
]
# Round 9, fourth: ``nov_n`` N (0: off): the memory in time is also at most N readings (the rate decays by at least
# ``exp(-1 / N)`` per reading): a finely sampled series sees in hours as many readings as a 5-minute one in 1.5 days.
PATCHES["novelty memory in readings too"] = [
    ('"nov_chance", "nov_far")\nPARAM', '"nov_chance", "nov_far", "nov_n")\nPARAM'),
    ("        nov_far: float = 0.0,\n", "        nov_far: float = 0.0,\n        nov_n: float = 0.0,\n"),
    ("    nov_far = p[PARAM.nov_far]\n", "    nov_far, nov_n = p[PARAM.nov_far], p[PARAM.nov_n]\n"),
    ("            nrate = nrate * math.exp(-max(gap_n, 0.0) / tau_n) + nov_a * inc\n",
     "            dec = math.exp(-max(gap_n, 0.0) / tau_n)\n"
     "            if nov_n > 0.0:\n"
     "                dec = min(dec, math.exp(-1.0 / nov_n))\n"
     "            nrate = nrate * dec + nov_a * inc\n"),
]

# Round 10: the reading's place in its slot (``phase``, 0: off). A slot is a bin of time of day ``step`` wide, and its
# EWMA is the value at the place in the bin where the series' readings usually fall. A reading that falls elsewhere
# (timestamps that jitter, irregular or random-phase sampling, a step learnt from a first gap that was not the rate)
# sits on the cycle earlier or later than its slot's mean, so on a steep part of the cycle it differs from it by the
# cycle's local slope times that offset, which the seasonal model scores as a surprise. With ``phase`` 1 the expected
# value is the slot's mean moved along the local slope (half the difference of the neighbouring slots' means) by the
# reading's offset from the usual place (an EWMA of the place, rate ``err_alpha``), and the slot learns the reading
# moved back by the same. ``phase_var`` v adds v times the offset's variance times the slope squared to the residual
# variance the seasonal surprise is scaled by. Regularly sampled series always fall at the same place (the offset is
# exactly 0), so they score bit for bit as without it; three more scalars.
PATCHES["phase in the slot"] = [
    ('"nov_far", "nov_n")\nPARAM', '"nov_far", "nov_n", "phase", "phase_var")\nPARAM'),
    ('"err_lvl", "err_ar")', '"err_lvl", "err_ar", "ph_n", "ph_mean", "ph_var")'),
    ("        nov_n: float = 0.0,\n",
     "        nov_n: float = 0.0,\n        phase: float = 0.0,\n        phase_var: float = 0.0,\n"),
    ("    nov_far, nov_n = p[PARAM.nov_far], p[PARAM.nov_n]\n",
     "    nov_far, nov_n = p[PARAM.nov_far], p[PARAM.nov_n]\n"
     "    phase, phase_var = p[PARAM.phase], p[PARAM.phase_var]\n"
     "    offs_m, tvar_m = np.zeros(2), np.zeros(2)\n"
     "    ph_n, ph_mean, ph_var = st[STATE.ph_n], st[STATE.ph_mean], st[STATE.ph_var]\n"),
    ("        best_z, best_err, best_ns, any_warm = -1.0, 1e300, 0, False\n",
     "        best_z, best_err, best_ns, any_warm = -1.0, 1e300, 0, False\n        ph_cur = -1.0\n"),
    ("            slots_m[m] = sl\n",
     "            slots_m[m] = sl\n"
     "            offs_m[m], tvar_m[m] = 0.0, 0.0\n"
     "            if phase > 0.0 or phase_var > 0.0:\n"
     "                tab_p = slot_mean if m == 0 else slot_mean2\n"
     "                seen_p = slot_seen if m == 0 else slot_seen2\n"
     "                ph = round(((ts % (period if m == 0 else period2)) / wstep - sl) * 1e6) / 1e6\n"
     "                if ph_cur < 0.0:\n"
     "                    ph_cur = ph\n"
     "                lo, hi = (sl - 1) % ns, (sl + 1) % ns\n"
     "                if (ph_n > 0.0 and (seen_p[lo >> 6] >> (lo & 63)) & 1 == 1\n"
     "                        and (seen_p[hi >> 6] >> (hi & 63)) & 1 == 1):\n"
     "                    d_sl = (tab_p[hi] - tab_p[lo]) / 2.0\n"
     "                    offs_m[m] = phase * (ph - ph_mean) * d_sl\n"
     "                    d_max = max(abs(tab_p[hi] - tab_p[sl]), abs(tab_p[sl] - tab_p[lo]))\n"
     "                    tvar_m[m] = phase_var * ph_var * d_max * d_max\n"),
    ("            r = x - (slot_mean if m == 0 else slot_mean2)[sl]\n",
     "            r = x - (slot_mean if m == 0 else slot_mean2)[sl] - offs_m[m]\n"),
    ("            vu = rv\n", "            vu = rv + tvar_m[m]\n"),
    ("        s_lik, replace = 0.0, False\n",
     "        if (phase > 0.0 or phase_var > 0.0) and ph_cur >= 0.0:\n"
     "            if ph_n == 0.0:\n"
     "                ph_mean = ph_cur\n"
     "            else:\n"
     "                dph = ph_cur - ph_mean\n"
     "                ph_mean += err_a * dph\n"
     "                ph_var += err_a * (dph * dph - ph_var)\n"
     "            ph_n += 1.0\n"
     "        s_lik, replace = 0.0, False\n"),
    ("                    tab[sl] = x\n", "                    tab[sl] = x - offs_m[m]\n"),
    ("tab[sl] = tab[sl] + alpha_s * (x - tab[sl])", "tab[sl] = tab[sl] + alpha_s * (x - offs_m[m] - tab[sl])"),
    ("    st[STATE.ar_c1], st[STATE.ar_px], st[STATE.err_lvl], st[STATE.err_ar] = ar_c1, ar_px, err_lvl, err_ar\n",
     "    st[STATE.ar_c1], st[STATE.ar_px], st[STATE.err_lvl], st[STATE.err_ar] = ar_c1, ar_px, err_lvl, err_ar\n"
     "    st[STATE.ph_n], st[STATE.ph_mean], st[STATE.ph_var] = ph_n, ph_mean, ph_var\n"),
]

# Round 10, second: a heavy tail, told by the series itself (``tail_k``, 0: off). The spike rule assumes that a reading
# ``spike`` (10) robust sigmas from the window's median is rare; on a heavy-tailed series (bursty counts, message
# volumes) such readings are routine. Each reading's robust z is also compared with a lower bar, ``tail_k`` sigmas,
# and the rate of readings above it is kept as an EWMA (rate ``rate_alpha``, one more scalar); while that rate is at
# least ``tail_max`` the series' tail is heavy and the spike rule does not alarm in the raw view. A count series
# judged in Anscombe's view (round 5: the median of recent readings, which bursts do not move) keeps its rule. Under
# Gaussian noise 5 robust sigmas happen about once in two million readings, so a light tail is never muted.
_SPIKE_GATE = ("                if spiked and spike_gate > 0.0 and s_lik > 0.0 and best_z < spike_gate:\n"
               "                    spiked = False\n")
PATCHES["heavy tail"] = [
    ('"phase", "phase_var")\nPARAM', '"phase", "phase_var", "tail_k", "tail_max")\nPARAM'),
    ('"ph_n", "ph_mean", "ph_var")', '"ph_n", "ph_mean", "ph_var", "trate")'),
    ("        phase_var: float = 0.0,\n",
     "        phase_var: float = 0.0,\n        tail_k: float = 0.0,\n        tail_max: float = 0.005,\n"),
    ("    phase, phase_var = p[PARAM.phase], p[PARAM.phase_var]\n",
     "    phase, phase_var = p[PARAM.phase], p[PARAM.phase_var]\n"
     "    tail_k, tail_max, trate = p[PARAM.tail_k], p[PARAM.tail_max], st[STATE.trate]\n"),
    (_SPIKE_GATE,
     _SPIKE_GATE +
     "                if tail_k > 0.0:\n"
     "                    zt = zr if not counted else -1.0\n"
     "                    if zt < 0.0 and window_reaches(x, window, W, tail_k * max(floor_frac * sd_long, 1e-9)):\n"
     "                        dev_t, sc_t = mad_deviation(x, window, W, buf, sd_long, floor_frac)\n"
     "                        zt = dev_t / sc_t\n"
     "                    if trate >= tail_max and not counted:\n"
     "                        spiked = False\n"
     "                    trate += rate_a * ((1.0 if zt >= tail_k else 0.0) - trate)\n"),
    ("    st[STATE.ph_n], st[STATE.ph_mean], st[STATE.ph_var] = ph_n, ph_mean, ph_var\n",
     "    st[STATE.ph_n], st[STATE.ph_mean], st[STATE.ph_var] = ph_n, ph_mean, ph_var\n    st[STATE.trate] = trate\n"),
    ("                zr = -1.0\n", "                zr, counted = -1.0, False\n"),
    ("                            zr = COUNT_SE * dev / max(sc, 1.0)\n",
     "                            zr = COUNT_SE * dev / max(sc, 1.0)\n                            counted = True\n"),
]

# The rows of BENCHMARKS-nab.md's "tried in round 3" table, in its order.
VARIANTS: list[dict[str, float]] = [
    {},
    *({"confirm": c} for c in (0.5, 1.0, 2.0, 3.0)),
    *({"confirm": 1.0, "sv_alpha": a, "var_mix": w} for a in (0.1, 0.3) for w in (0.5, 1.0)),
    *({"confirm": 1.0, "mix": m, "zg": g} for m in (0.3, 0.5) for g in (1.0, 3.0)),
    *({"confirm": 1.0, "zext": z, "fast": f} for z in (4.0, 6.0) for f in (2, 4)),
    *({"confirm": 1.0, "spike_gate": g} for g in (3.0, 6.0, 10.0)),
    {"hold": 150},
    *({"hold": 150, "rearm": r, "rearm_level": lv} for r, lv in ((1, 0.2), (1, 0.5), (10, 0.5), (30, 0.5), (1, 0.05),
                                                               (1, 0.01), (30, 0.2), (60, 0.5))),
    *({"hold": h, "rearm": 30, "rearm_level": 0.5} for h in (300, 500)),
]

# Round 6 (session 7): the rows of BENCHMARKS-nab.md's round-6 table, and the bases whose --cv grid was scored.
ROUND6_VARIANTS: list[dict[str, float]] = [
    {},
    *({"ar": a} for a in (0.3, 0.4, 0.5, 0.6, 0.8, 1.0)),
    *({"ratio_max": r} for r in (0.6, 1.0, 2.0)),
    {"ratio_max": 1.0, "bonf": 1.0},
    {"short": 20},
    *({"ratio_max": r, "short": 20} for r in (1.0, 2.0)),
]
ROUND6_BASES: list[dict[str, float]] = [{"ar": 0.5}, {"ratio_max": 0.6}, {"ratio_max": 1.0}, {"ratio_max": 2.0},
                                        {"ratio_max": 1.0, "bonf": 1.0}, {"ratio_max": 1.0, "short": 20}]

# Round 7 (session 7): the options' rows of BENCHMARKS-nab.md's gate table (dev in-sample at the row's settings,
# and the --cv protocol over the detector's grid with them under every point).
ROUND7_BASES: list[tuple[str, dict[str, float]]] = [
    *((det, base) for det in ("seasonal", "likelihood", "robust")
      for base in ({"log_surprise": 1, "novelty_sd": 2.0}, {"log_surprise": 1})),
    ("seasonal", {"novelty_sd": 2.0}),
]

# Round 8 (session 8): the rows of BENCHMARKS-nab.md's round-8 table, and the bases whose --cv grid was scored.
DAY_MS = 86_400_000.0
ROUND8_VARIANTS: list[dict[str, float]] = [
    {}, {"daytype": 1}, {"slot_ms": 300_000.0}, {"slot_ms": 600_000.0}, {"wins": 3.0}, {"wins": 5.0},
    *({"nov_z": z} for z in (2.0, 3.0, 4.0)),
    {"novelty_alpha": 0.003, "novelty_max": 0.003},
    *({"nov_ms": d * DAY_MS} for d in (0.5, 0.75, 1.0, 1.5, 2.0)),
    *({"nov_ms": d * DAY_MS, "nov_young": 1} for d in (0.5, 0.75, 1.0, 1.5, 2.0)),
]
ROUND8_BASES: list[dict[str, float]] = [{"novelty_alpha": 0.003, "novelty_max": 0.003},
                                        *({"nov_ms": d * DAY_MS} for d in (0.5, 0.75, 1.0, 1.5, 2.0)),
                                        *({"nov_ms": d * DAY_MS, "nov_young": 1} for d in (0.5, 0.75, 1.0, 1.5, 2.0))]

# Round 9 (session 9): repairs of ``nov_ms`` (1.5 days, round 8's choice) for young and finely sampled series.
ROUND9_VARIANTS: list[dict[str, float]] = [
    {}, {"nov_ms": 1.5 * DAY_MS},
    *({"nov_ms": 1.5 * DAY_MS, "nov_age": c} for c in (0.1, 0.2, 0.3)),
    *({"nov_ms": 1.5 * DAY_MS, "nov_chance": c} for c in (0.5, 1.0, 2.0)),
    *({"nov_ms": 1.5 * DAY_MS, "nov_far": f} for f in (0.25, 0.5, 0.75)),
    *({"nov_ms": 1.5 * DAY_MS, "nov_n": 432, "nov_far": f} for f in (0.0, 0.15, 0.25, 0.5)),
    *({"nov_ms": 1.5 * DAY_MS, "nov_n": n, "nov_far": 0.25} for n in (288, 576)),
]
ROUND9_BASES: list[dict[str, float]] = [b for b in ROUND9_VARIANTS[2:] if b.get("nov_n") != 432 or b["nov_far"] > 0.0]

# Round 10 (session 11): the reading's place in its slot (``phase``, ``phase_var``) and a heavy tail told by the series
# (``tail_k``, ``tail_max``); the defaults' grid is scored in the same run. Each row is also scored on the robustness
# suite (``benchmarks.nab_robustness``, beside the baselines) and by ``simulator_check``.
ROUND10_VARIANTS: list[dict[str, float]] = [
    {}, {"phase": 1.0}, {"phase_var": 1.0}, {"phase": 1.0, "phase_var": 1.0},
    *({"tail_k": k, "tail_max": m} for k in (4.0, 5.0, 6.0) for m in (0.002, 0.005, 0.01)),
]
ROUND10_BASES: list[dict[str, float]] = ROUND10_VARIANTS
ROUND10_BASELINES = ("likelihood", "robust")

# Added to ``seasonal``'s --cv grid, so that the folds themselves can choose to confirm the cycle first.
CONFIRM_POINTS: list[dict[str, float]] = [{"confirm": 1.0}, {"confirm": 2.0}]

# ``seasonal``'s --cv grid moved to hold 150 released at a score below 0.2 (the grid's hold alternative is
# the old 50, and ``rearm=0`` is the plain hold of 150).
REARM_BASE: dict[str, float] = {"hold": 150, "rearm": 1, "rearm_level": 0.2}
REARM_GRID: list[dict[str, float]] = [{}, {"alpha": 0.003}, {"alpha": 0.03}, {"short": 5}, {"short": 20}, {"spike": 6.0},
                                      {"spike": 1e9}, {"hold": 50}, {"ratio": 0.1}, {"ratio": 0.6}, {"rearm": 0}]


def _apply(src: str, module: str, patches: dict[str, Patch]) -> str:
    for name, patch in patches.items():
        for old, new in patch:
            found = src.count(old)
            if found != 1:
                raise ValueError(f"patch {name!r}: anchor found {found} times in {module}.py (expected once); "
                                 f"update benchmarks/nab_variants.py to the detector's current code: {old[:60]!r}")
            src = src.replace(old, new)
    return src


def patched_source(detector: str = "seasonal") -> str:
    """``detector``'s module source with its options (``OPTIONS``) and, for ``seasonal``, every patch of
    ``PATCHES`` applied; an anchor that is not there exactly once is an error."""
    if detector not in OPTIONS:
        raise ValueError(f"no variants of {detector!r}; known: {', '.join(OPTIONS)}")
    path = Path(models.anomaly.__file__).parent / f"{detector}.py"
    src = _apply(path.read_text(), detector, {"options": OPTIONS[detector]})
    if detector == "seasonal":
        src = _apply(src, detector, PATCHES)
    return src.replace(f'name = "{detector}"', f'name = "{detector}-variants"') + OPTION_STEPS


def variant_class(where: Path = Path(".eddyline/nab-variants"), detector: str = "seasonal") -> type:
    """The patched detector class, imported from the patched source written under ``where`` (numba caches
    compiled kernels beside their source file, so the file stays; its name is the source's digest).

    Parameters
    ----------
    where
        Folder for the patched sources.
    detector
        ``seasonal``, ``robust`` or ``likelihood``.
    """
    src = patched_source(detector)
    path = Path(where) / f"{detector}_variants_{hashlib.sha256(src.encode()).hexdigest()[:12]}.py"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, CLASSES[detector])


def simulator_check(params: dict[str, float] | None = None, devices: int = 20, seed: int = 3,
                    records: int = 2000) -> dict[str, Any]:
    """Round 8's simulator check for the patched ``seasonal`` with ``params``: the demo simulator's records through
    ``sensor_anomaly_flow``, as its test does at a fifth of this scale; an injected anomaly is caught when one of
    its readings scores at or above the threshold. The young, 1-second series no dev file or suite has.

    Parameters
    ----------
    params
        Parameters of the patched detector (``{}``: scores like the production default).
    devices, seed
        The simulator's fleet.
    records
        How many of its records go through the flow.
    """
    import itertools
    from collections import Counter

    from streams.flows.sensor_anomaly import ALERTS_TOPIC, SCORES_TOPIC, SOURCE_TOPIC, sensor_anomaly_flow
    from streams.processor import Event, run_local
    from streams.producers.simulator import SensorSimulator, flagged_times

    cls = variant_class()
    models.anomaly.DETECTORS[cls.name] = cls
    try:
        sim = SensorSimulator(devices=devices, seed=seed)
        batch = list(itertools.islice(sim, records))
        emits = run_local(sensor_anomaly_flow(detector=cls.name, detector_params=dict(params or {})),
                          [Event(SOURCE_TOPIC, r["device_id"], r) for r in batch])
    finally:
        del models.anomaly.DETECTORS[cls.name]
    flagged = flagged_times(e.record for e in emits if e.topic == SCORES_TOPIC)
    missed = Counter(a.kind for a in sim.injected if not a.caught(flagged))
    return {"injected": len(sim.injected), "caught": len(sim.injected) - sum(missed.values()),
            "missed": dict(sorted(missed.items())),
            "opened": sum(1 for e in emits if e.topic == ALERTS_TOPIC and e.record["status"] == "OPENED")}


def _subset(scores: cv.Scores, keys: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {k: scores[k] for k in keys}


def _held_out(scores: cv.Scores, windows: Any, cost: nab.CostMatrix, held_out: str) -> cv.FoldResult:
    """The held-out fold of a one-candidate CV: only NAB's threshold is chosen on the other categories."""
    folds = cv.cross_validate({"x": scores}, windows, {"standard": cost})["standard"]
    return next(f for f in folds if f.held_out == held_out)


def select_nested(cands: dict[str, cv.Scores], windows: Any, cost: nab.CostMatrix) -> list[cv.FoldResult]:
    """Each fold chooses the candidate with the best leave-one-category-out CV on its own training categories."""
    names = list(cands)
    out = []
    for fold in cv.leave_one_category_out(cands[names[0]]):
        inner = {n: cv.pooled(cv.cross_validate({n: _subset(cands[n], fold.train)}, windows,
                                                {"standard": cost})["standard"]) for n in names}
        best = max(names, key=lambda n: (inner[n], -names.index(n)))
        out.append(dataclasses.replace(_held_out(cands[best], windows, cost, fold.held_out), candidate=best))
    return out


def select_by_vote(cands: dict[str, cv.Scores], windows: Any, cost: nab.CostMatrix, wins: int) -> list[cv.FoldResult]:
    """Each fold keeps the defaults (the first candidate) unless another beats them on at least ``wins`` of its
    training categories (raw NAB score at its own training threshold); among those, the best pooled one."""
    names = list(cands)
    out = []
    for fold in cv.leave_one_category_out(cands[names[0]]):
        trained = {n: nab.score_corpus(_subset(cands[n], fold.train), windows, {"standard": cost})["standard"]
                   for n in names}
        cats = sorted({cv.category(p) for p in fold.train})
        raw = {n: {c: trained[n].category(c, cost)["raw"] for c in cats} for n in names}
        best = names[0]
        for n in names[1:]:
            beats = sum(raw[n][c] > raw[names[0]][c] + 1e-9 for c in cats)
            if beats >= wins and trained[n].normalized > trained[best].normalized:
                best = n
        out.append(dataclasses.replace(_held_out(cands[best], windows, cost, fold.held_out), candidate=best))
    return out


def _row(label: str, scores: cv.Scores, windows: Any, cost: nab.CostMatrix) -> dict[str, Any]:
    ins = nab.score_corpus(scores, windows, {"standard": cost})["standard"]
    folds = cv.cross_validate({label: scores}, windows, {"standard": cost})["standard"]
    return {"variant": label, "in_sample": round(ins.normalized, 2), "threshold_cv": round(cv.pooled(folds), 2),
            "folds": {f.held_out: {"score": None if f.score is None else round(f.score, 2), "fp": f.fp} for f in folds}}


def _protocol(label: str, folds: list[cv.FoldResult]) -> dict[str, Any]:
    return {"rule": label, "cv": round(cv.pooled(folds), 2),
            "folds": {f.held_out: {"candidate": f.candidate, "score": None if f.score is None else round(f.score, 2)}
                      for f in folds}}


def run(data_dir: Path, cache_dir: Path | None = None,
        progress: Callable[[str], None] = lambda _m: None, rounds: tuple[int, ...] = (3, 6)) -> dict[str, Any]:
    """Score every variant (threshold-only CV) and every selection rule over ``seasonal``'s grid.

    Parameters
    ----------
    data_dir
        A NAB-layout directory.
    cache_dir
        Score cache for ``seasonal``'s ``--cv`` grid (``benchmarks.nab.grid_scores``).
    progress
        Called with one line per result.
    rounds
        Which rounds' rows to score: 3 (``VARIANTS`` and the selection rules), 6 (``ROUND6_VARIANTS`` and
        the ``--cv`` protocol over the grid around each of ``ROUND6_BASES``), 7 (that protocol around each of
        ``ROUND7_BASES``, for its detector), 8 (``ROUND8_VARIANTS``, and the protocol around ``ROUND8_BASES``),
        9 (the same for ``ROUND9_VARIANTS`` and ``ROUND9_BASES``, and ``simulator_check`` for each variant) and/or 10
        (the same for ``ROUND10_VARIANTS`` and ``ROUND10_BASES``, and the robustness suite for each variant and for
        ``ROUND10_BASELINES``).
    """
    from benchmarks.nab import candidate_name

    series, windows, profiles = load_corpus(data_dir)
    cost = profiles["standard"]
    variant = variant_class()

    def score(params: dict[str, float]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {rel: (ts, variant(**params).score_learn(v, ms)) for rel, (ts, ms, v) in series.items()}

    out: dict[str, Any] = {"files": len(series), "variants": [], "selection_rules": []}
    if 7 in rounds:
        for det, base in ROUND7_BASES:
            cls = variant if det == "seasonal" else variant_class(detector=det)
            grid = {candidate_name({**base, **g}): {rel: (ts, cls(**{**base, **g}).score_learn(v, ms))
                                                    for rel, (ts, ms, v) in series.items()} for g in GRIDS[det]}
            ins = nab.score_corpus(grid[candidate_name(base)], windows, {"standard": cost})["standard"]
            rule = _protocol(f"{det}@{candidate_name(base)}: best on the four (bench nab --cv)",
                             cv.cross_validate(grid, windows, {"standard": cost})["standard"])
            rule["in_sample"] = round(ins.normalized, 2)
            out["selection_rules"].append(rule)
            progress(f"{rule['rule']}: in-sample {rule['in_sample']:.2f}, grid CV {rule['cv']:.2f} "
                     + ", ".join(f"{c}: {f['score']} {f['candidate']}" for c, f in rule["folds"].items()))
    def robustness(scorer: nab_robustness.Scorer) -> dict[str, Any]:
        return {str(seed): nab_robustness.score(series, windows, {"standard": cost}, scorer, seed)
                for seed in (nab_robustness.TUNE_SEED, nab_robustness.REPORT_SEED)}

    if 10 in rounds:
        out["robustness_baselines"] = {}
        for det in ROUND10_BASELINES:
            out["robustness_baselines"][det] = rob = robustness(lambda v, ms, det=det: models.anomaly.make_detector(
                det).score_learn(v, ms))
            progress(f"robustness {det}: {rob}")
    for r, rows, bases in ((6, ROUND6_VARIANTS, ROUND6_BASES), (8, ROUND8_VARIANTS, ROUND8_BASES),
                          (9, ROUND9_VARIANTS, ROUND9_BASES), (10, ROUND10_VARIANTS, ROUND10_BASES)):
        if r not in rounds:
            continue
        for params in rows:
            out["variants"].append(_row(candidate_name(params), score(params), windows, cost))
            progress(f"{out['variants'][-1]['variant']}: in-sample {out['variants'][-1]['in_sample']:.2f}, "
                     f"threshold-only CV {out['variants'][-1]['threshold_cv']:.2f}")
            if r in (9, 10):
                out["variants"][-1]["simulator"] = sim = simulator_check(params)
                progress(f"  simulator: {sim['caught']} of {sim['injected']} caught, {sim['opened']} alerts opened")
            if r == 10:
                out["variants"][-1]["robustness"] = rob = robustness(
                    lambda v, ms, params=params: variant(**params).score_learn(v, ms))
                progress(f"  robustness: {rob}")
        for base in bases:
            grid = {candidate_name({**base, **g}): score({**base, **g}) for g in GRIDS["seasonal"]}
            rule = _protocol(f"best on the four (bench nab --cv), grid around {candidate_name(base)}",
                             cv.cross_validate(grid, windows, {"standard": cost})["standard"])
            out["selection_rules"].append(rule)
            chosen = ", ".join(f"{c}: {f['score']} {f['candidate']}" for c, f in rule["folds"].items())
            progress(f"{rule['rule']}: {rule['cv']:.2f} {chosen}")
    if 3 not in rounds:
        return out

    rows = out["variants"]
    for params in VARIANTS:
        rows.append(_row(candidate_name(params), score(params), windows, cost))
        progress(f"{rows[-1]['variant']}: in-sample {rows[-1]['in_sample']:.2f}, "
                 f"threshold-only CV {rows[-1]['threshold_cv']:.2f}")
    grid = grid_scores("seasonal", GRIDS["seasonal"], series, cache_dir)
    rearm_grid = {candidate_name(params): score({**REARM_BASE, **params}) for params in REARM_GRID}
    best_on_four = "best on the four (bench nab --cv)"
    rules = [_protocol(best_on_four, cv.cross_validate(grid, windows, {"standard": cost})["standard"]),
             _protocol("nested CV", select_nested(grid, windows, cost))]
    rules += [_protocol(f"vote: beats the defaults on >= {k} of 4", select_by_vote(grid, windows, cost, k)) for k in (2, 3, 4)]
    with_confirm = {**grid, **{candidate_name(c): score(c) for c in CONFIRM_POINTS}}
    rules.append(_protocol(f"{best_on_four}, grid + confirm 1 and 2",
                           cv.cross_validate(with_confirm, windows, {"standard": cost})["standard"]))
    rules += [_protocol(f"{best_on_four}, grid around {candidate_name(REARM_BASE)}",
                        cv.cross_validate(rearm_grid, windows, {"standard": cost})["standard"]),
              _protocol(f"nested CV, grid around {candidate_name(REARM_BASE)}", select_nested(rearm_grid, windows, cost))]
    for r in rules:
        progress(f"{r['rule']}: {r['cv']:.2f} " + ", ".join(f"{c}: {f['candidate']}" for c, f in r["folds"].items()))
    out["selection_rules"] += rules
    return out


def command(
    data: Annotated[Path, typer.Option("--data", help="NAB-layout directory (data/, labels/, config/)")],
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    cache: Annotated[Path, typer.Option("--cache", help="score cache for the --cv grid")] = Path(".eddyline/nab-cv"),
    round_: Annotated[list[int] | None, typer.Option(
        "--round", help="rounds to score: 3, 6, 7, 8, 9 and/or 10 (default 3 and 6)")] = None,
) -> None:
    """Score the seasonal variants and selection rules tried for issue 14 (standard profile)."""
    unknown = sorted(set(round_ or ()) - {3, 6, 7, 8, 9, 10})
    if unknown:
        raise typer.BadParameter(f"no round {unknown}: pass --round 3, 6, 7, 8, 9 or 10")
    try:
        summary = run(data, cache, progress=print, rounds=tuple(round_ or (3, 6)))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if json_path is not None:
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(command)
