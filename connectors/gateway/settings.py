"""The gateway's ``[gateway]`` settings (env ``EDDYLINE_GATEWAY_*``): where it listens, who may post, its limits."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from connectors.config import Section

MIN_TOKEN_CHARS = 16


class GatewaySettings(Section):
    """``[gateway]`` / ``EDDYLINE_GATEWAY_*``; tokens are named so that every accepted event records its client.

    In TOML: ``tokens = { edge-fleet = "…", web = "…" }``; in the environment:
    ``EDDYLINE_GATEWAY_TOKENS='{"edge-fleet": "…"}'``. Tokens shorter than 16 characters are refused.
    The other fields are described where they are declared.

    Parameters
    ----------
    host
        Listen address; loopback by default, so that exposing the gateway is a decision.
    port
        Listen port (0: any free one).
    """

    toml_table = "gateway"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_GATEWAY_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=0, le=65535)
    tokens: dict[str, SecretStr] = Field(default_factory=dict, description="Client name -> bearer token")
    allow_anonymous: bool = Field(False, description="Accept requests without a token (development only)")
    max_body_bytes: int = Field(1_048_576, gt=0, description="Largest HTTP body or WebSocket message")
    max_events_per_request: int = Field(1000, gt=0, description="Longest JSON array one POST may carry")
    max_queue: int = Field(
        10_000, gt=0, description="Messages waiting in the producer above which requests get 429 (backpressure)"
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 429")
    create_topics: bool = Field(True, description="Create the input topics at start-up")
    shutdown_flush_s: float = Field(10.0, ge=0, description="How long to wait for deliveries when stopping")

    @field_validator("tokens")
    @classmethod
    def _strong_tokens(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, token in value.items():
            if not name:
                raise ValueError("every token needs a non-empty client name")
            if len(token.get_secret_value()) < MIN_TOKEN_CHARS:
                raise ValueError(
                    f"the token of {name!r} is shorter than {MIN_TOKEN_CHARS} characters; "
                    "use a random one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
        return value

    def check_usable(self) -> None:
        """Refuse to start a gateway that nobody could authenticate to, unless anonymity is explicit."""
        if not self.tokens and not self.allow_anonymous:
            raise ValueError(
                'the gateway has no tokens: set [gateway] tokens = { NAME = "SECRET" } in eddyline.toml or '
                'EDDYLINE_GATEWAY_TOKENS=\'{"NAME": "SECRET"}\' (or allow_anonymous = true for local development)'
            )
