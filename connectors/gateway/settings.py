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
    body_timeout_s: float = Field(
        30.0, gt=0, description="Longest a request body may take to arrive; slower ones get 408 (a client trickling "
        "its body would hold its connection for ever)"
    )
    head_timeout_s: float = Field(
        10.0, gt=0, description="Longest a connection may take to send a request's line and headers, from connecting "
        "or from its last answer, and a Twilio stream without an Authorization header its 'start' (its token); "
        "slower ones are closed (a client trickling its headers, or no token, would hold it for ever)"
    )
    max_queue: int = Field(
        10_000, gt=0, description="Messages waiting in the producer above which requests get 429 (backpressure)"
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 429")
    scopes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Client name -> the event types it may send (sensor_batch, audio_chunk, click); "
        "'*' sets it for clients not named; a client covered by neither may send every type",
    )
    key_scopes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Client name -> the keys its events may carry (device_id, conversation_id or a Twilio callSid, "
        "user_id): an id, or 'PREFIX*' for the ids starting with PREFIX; '*' sets it for clients not named; a "
        "client covered by neither may send any key",
    )
    rates: dict[str, float] = Field(
        default_factory=dict,
        description="Client name -> events per second it may send (refused ones count too), over which it gets "
        "429 with Retry-After; '*' sets it for clients not named; unlimited when covered by neither",
    )
    rate_burst_s: float = Field(2.0, gt=0, description="A client may send this many seconds' worth of its rate at once")
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

    @field_validator("scopes")
    @classmethod
    def _known_types(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        from connectors.gateway.records import ENDPOINTS

        for name, types in value.items():
            unknown = set(types) - set(ENDPOINTS)
            if unknown:
                raise ValueError(f"the scopes of {name!r} name unknown event types {sorted(unknown)}; "
                                 f"use some of {', '.join(ENDPOINTS)}")
        return value

    @field_validator("key_scopes")
    @classmethod
    def _no_empty_keys(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, keys in value.items():
            if "" in keys:
                raise ValueError(f"the key_scopes of {name!r} hold an empty key; name ids, or 'PREFIX*' for a prefix")
        return value

    @field_validator("rates")
    @classmethod
    def _positive_rates(cls, value: dict[str, float]) -> dict[str, float]:
        for name, rate in value.items():
            if not rate > 0:
                raise ValueError(f"the rate of {name!r} must be a positive number of events per second")
        return value

    def check_usable(self) -> None:
        """Refuse to start a gateway that nobody could authenticate to, unless anonymity is explicit."""
        if not self.tokens and not self.allow_anonymous:
            raise ValueError(
                'the gateway has no tokens: set [gateway] tokens = { NAME = "SECRET" } in eddyline.toml or '
                'EDDYLINE_GATEWAY_TOKENS=\'{"NAME": "SECRET"}\' (or allow_anonymous = true for local development)'
            )
