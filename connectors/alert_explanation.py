"""An alert's ``explanation`` (schema v2) in words, one way for every place that shows it.

PagerDuty's custom details, the Slack message, the live page and the demo's summary all render the same
sentence, so an on-call engineer reads the same "why" wherever the alert reaches them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RULE_NAMES = {
    "spike": "spike",
    "level_shift": "level shift",
    "seasonal_break": "seasonal break",
    "flat_line": "flat line",
    "novelty": "beyond the range seen so far",
}
CONTEXT_SHOWN = 8  # readings of the context a one-line message shows (the event carries them all)


def explanation_text(explanation: Mapping[str, Any] | None) -> str:
    """One line: the rule, what was expected, the normal band and how far off the reading was; "" for none.

    Parameters
    ----------
    explanation
        An alert's ``explanation`` field, or ``None`` (alerts without one, v1 records).

    Examples
    --------
    >>> explanation_text({"rule": "spike", "expected": 21.52, "lower": 19.0, "upper": 24.04, "deviation": 12.6,
    ...                   "context": [21.4, 21.6, 35.0]})
    'spike: expected 21.52 (normal 19 to 24.04), 12.6 robust SD off; recent 21.4, 21.6, 35'
    >>> explanation_text(None)
    ''
    """
    if not explanation:
        return ""
    rule = RULE_NAMES.get(explanation["rule"], str(explanation["rule"]))
    text = (f"{rule}: expected {explanation['expected']:.4g} (normal {explanation['lower']:.4g} to "
            f"{explanation['upper']:.4g}), {explanation['deviation']:.3g} robust SD off")
    context = list(explanation.get("context") or [])[-CONTEXT_SHOWN:]
    if context:
        text += "; recent " + ", ".join(f"{v:.4g}" for v in context)
    return text


__all__ = ["RULE_NAMES", "explanation_text"]
