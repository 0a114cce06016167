"""Which schema registry the process uses: ``[schema_registry]`` / ``EDDYLINE_SCHEMA_REGISTRY_*``.

With no URL every process uses the local registry (ids derived from the packaged schemas). With one,
producers register schemas and consumers resolve ids through it (``schemas.ConfluentRegistry``): consumers
pause while it cannot answer (a valid event is never dead-lettered for the registry's sake), producers get
``RegistryUnavailableError`` after the retries so that they can answer "try again". Ids the registry does
not have are looked up among the packaged schemas too: edge agents write those (they never wait for a
registry), and their readings must not be dead-lettered because the platform uses one.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from schemas import AvroSerde, ConfluentRegistry, LocalRegistry
from schemas.registry import Registry


class SchemaRegistrySettings(Section):
    """``[schema_registry]`` / ``EDDYLINE_SCHEMA_REGISTRY_*``.

    Parameters
    ----------
    url
        The Confluent-compatible registry (``https://registry:8081``); unset: the local registry.
    username, password
        HTTP basic authentication (Confluent Cloud: the API key and secret).
    timeout_s
        Seconds per request.
    retries
        Attempts after a failed request before a producer is told the registry is unavailable.
    negative_cache_s
        How long an id the registry does not have is answered from the cache.
    """

    toml_table = "schema_registry"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_SCHEMA_REGISTRY_", extra="forbid")

    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0)
    negative_cache_s: float = Field(60.0, ge=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        """A URL the client cannot speak to would not fail here but as an outage that never ends (consumers pause)."""
        if url and not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http:// or https:// URL; give the registry's base URL, "
                             "e.g. http://registry:8081")
        return url

    def registry(self, *, consumer: bool) -> Registry:
        """The registry for a consumer (pauses while the registry is unavailable) or a producer (raises)."""
        if not self.url:
            return LocalRegistry()
        auth = (self.username or "", self.password.get_secret_value() if self.password else "") \
            if self.username or self.password else None
        return ConfluentRegistry(self.url, auth=auth, timeout=self.timeout_s, retries=self.retries,
                                 negative_ttl_s=self.negative_cache_s, pause=consumer, fallback=LocalRegistry())


def configured_serde(*, consumer: bool = False, compiled: bool = False) -> AvroSerde:
    """An ``AvroSerde`` on the configured registry (the local one when no URL is set).

    Parameters
    ----------
    consumer
        Decoding for a consumer: wait for an unavailable registry instead of raising.
    compiled
        Use readers and writers compiled per schema (``AvroSerde``'s ``compiled``; needs numpy and numba).
    """
    return AvroSerde(SchemaRegistrySettings().registry(consumer=consumer), compiled=compiled)
