"""Where the platform's runs and model versions go: the ``[mlflow]`` settings applied to ``models.tracking``."""

from __future__ import annotations

from connectors.config import MlflowSettings
from models import tracking


def configure() -> MlflowSettings:
    """Apply ``[mlflow]`` (or ``EDDYLINE_MLFLOW_*``) to this process's trainings and registry; return it."""
    settings = MlflowSettings()
    tracking.configure(settings.tracking_uri, settings.store_dir)
    return settings
