"""Model registries: every version's artifact, metrics and lineage; champion, challengers, rollback.

``ModelRegistry`` keeps them in a local folder; ``MlflowRegistry`` (``models.registry.mlflow_store``) on an
MLflow model registry, with the same calls. ``RegistryOutbox`` applies a flow's changes off its hot path.
"""

from models.registry.outbox import RegistryOutbox
from models.registry.store import ModelRegistry, ModelVersion, RegistryError

__all__ = ["ModelRegistry", "ModelVersion", "RegistryError", "RegistryOutbox"]
