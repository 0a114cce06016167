"""Online learners for the click stream: predict first, then learn from the outcome."""

from models.online.clicks import ClickModel, OnlineLogit, PopularityModel

__all__ = ["ClickModel", "OnlineLogit", "PopularityModel"]
