"""Model registries: every version's artifact, metrics and lineage; champion, challengers, rollback.

``ModelRegistry`` keeps them in a local folder; ``MlflowRegistry`` (``models.registry.mlflow_store``) on an
MLflow model registry, with the same calls: both are a ``Registry`` (``models.registry.base``).
``RegistryOutbox`` applies a flow's changes off its hot path.
"""

from models.registry.base import ModelVersion, Registry, RegistryError
from models.registry.outbox import RegistryOutbox
from models.registry.store import ModelRegistry

__all__ = ["ModelRegistry", "ModelVersion", "Registry", "RegistryError", "RegistryOutbox"]
