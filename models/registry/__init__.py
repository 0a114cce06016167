"""The local model registry: every version's artifact, metrics and lineage; champion, challengers, rollback."""

from models.registry.store import ModelRegistry, ModelVersion, RegistryError

__all__ = ["ModelRegistry", "ModelVersion", "RegistryError"]
