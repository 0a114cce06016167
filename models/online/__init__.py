"""Online learners for the click stream: predict first, then learn from the outcome."""

from models.online.clicks import DRIFT_FEATURES, FEATURES, ClickModel, OnlineLogit, PopularityModel

__all__ = ["DRIFT_FEATURES", "FEATURES", "ClickModel", "OnlineLogit", "PopularityModel"]
