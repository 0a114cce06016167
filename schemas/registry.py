"""Schema registries: where a schema id comes from and what schema an id stands for.

``LocalRegistry`` needs nothing running: ids are derived from each schema's canonical form, so they are
stable across processes, machines and restarts. ``ConfluentRegistry`` speaks the Confluent Schema
Registry REST API when one is configured; subjects follow the TopicNameStrategy (``<topic>-value``).
A registry that cannot answer raises ``RegistryUnavailableError`` (retry later, never a dead letter);
only an id the registry says it does not have is ``UnknownSchemaError`` (the message is bad).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

from schemas import catalog
from schemas.catalog import SchemaVersion
from schemas.errors import RegistryUnavailableError, SchemaError, UnknownSchemaError

log = logging.getLogger(__name__)
MAX_MISSING = 10_000
MAX_ID = 2**31 - 1  # registries number schemas with Java ints; Confluent's answer past it is a bare 404 (no such path)
_FIELDS = {"id": int, "schema": str}  # what the registry's answers carry, and their types


def _error_code(detail: str) -> int:
    """The Confluent ``error_code`` of an error answer (40403: no such schema), 0 when it has none."""
    try:
        code = json.loads(detail).get("error_code")
    except (ValueError, AttributeError):
        return 0
    return code if type(code) is int else 0


class Registry(Protocol):
    """What ``AvroSerde`` needs of a schema registry: an id to write with, and the schema an id stands for."""

    def id_for(self, topic: str, version: SchemaVersion) -> int:
        """The id to write ``version`` with, registering it under the topic's subject if needed.

        Parameters
        ----------
        topic
            The full topic name (namespace included); subjects are ``<topic>-value``.
        version
            The schema version being written.
        """
        ...

    def schema_for(self, schema_id: int) -> str:
        """The canonical schema text registered under an id; ``UnknownSchemaError`` if there is none.

        Parameters
        ----------
        schema_id
            The id from a message's wire-format header.
        """
        ...


@lru_cache(maxsize=1024)
def local_schema_id(canonical: str) -> int:
    """A stable 31-bit id for a schema: CRC32 of its Parsing Canonical Form (remembered: every encode asks).

    Parameters
    ----------
    canonical
        The schema's Parsing Canonical Form (``SchemaVersion.canonical``).
    """
    return zlib.crc32(canonical.encode()) & 0x7FFFFFFF


class LocalRegistry:
    """Every schema version shipped in the package, under ids derived from its content.

    It needs no server, and every process on every machine gives a schema the same id.

    Examples
    --------
    >>> from schemas import LocalRegistry, latest
    >>> registry = LocalRegistry()
    >>> version = latest("alert")
    >>> schema_id = registry.id_for("alerts", version)
    >>> registry.schema_for(schema_id) == version.canonical
    True
    """

    def __init__(self) -> None:
        self._by_id: dict[int, str] = {}
        for event_type in catalog.event_types():
            for v in catalog.versions(event_type):
                sid = local_schema_id(v.canonical)
                if self._by_id.setdefault(sid, v.canonical) != v.canonical:
                    raise RuntimeError(f"schema id collision on {sid} for {event_type} v{v.version}")

    def id_for(self, topic: str, version: SchemaVersion) -> int:
        """The id of a shipped schema version: derived from its content, the same everywhere.

        Parameters
        ----------
        topic, version
            As for ``Registry.id_for`` (the topic does not matter here).
        """
        return local_schema_id(version.canonical)

    def schema_for(self, schema_id: int) -> str:
        """The canonical schema of an id; ``UnknownSchemaError`` for an id no shipped schema has.

        Parameters
        ----------
        schema_id
            As for ``Registry.schema_for``.
        """
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaError(
                f"schema id {schema_id} is not one of eddyline's schemas; "
                "configure EDDYLINE_SCHEMA_REGISTRY_URL if producers use a schema registry"
            ) from None


class ConfluentRegistry:
    """A client for a Confluent-compatible Schema Registry: cached both ways, retried, failures told apart.

    Subjects follow the TopicNameStrategy (``<topic>-value``). Ids and schemas, once known, are cached for
    good (an id never changes meaning); an id the registry says it does not have (404, error code 404xx) is
    remembered for ``negative_ttl_s`` so that a stream of bad messages does not become a stream of requests.
    Network errors, 5xx, refused credentials and answers no registry gives (a URL that leads elsewhere: a
    bare 404, a page without the field asked for) are retried ``retries`` times with doubling back-off, then raise
    ``RegistryUnavailableError``; with ``pause`` the client instead keeps retrying, logging once a minute
    that consumption is paused, until the registry answers: what a consumer wants, never a producer
    answering a client (the gateway says 503).

    Parameters
    ----------
    url
        The registry's base URL.
    auth
        (user, password) for HTTP basic authentication, or None.
    timeout
        Seconds to wait for each request.
    retries
        Further attempts after a failed request before giving up (or, with ``pause``, before logging).
    backoff_s
        The first wait between attempts; it doubles up to ``max_backoff_s``.
    max_backoff_s
        The longest wait between attempts.
    negative_ttl_s
        How long an unknown id is answered from the cache.
    pause
        Retry until the registry answers instead of raising ``RegistryUnavailableError``.
    fallback
        Asked for an id the registry does not have: ``LocalRegistry()`` lets producers that write local ids
        (edge agents, often offline, never talk to a registry) share topics with registered ones.
    sleep
        Waits (tests replace it).
    """

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        negative_ttl_s: float = 60.0,
        pause: bool = False,
        fallback: Registry | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.negative_ttl_s, self.pause, self.fallback, self._sleep = negative_ttl_s, pause, fallback, sleep
        self._headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
        if auth:
            import base64

            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, str] = {}
        self._missing: dict[int, tuple[float, str]] = {}  # id -> (answer again from the registry after, why)
        self._lock = threading.Lock()

    def _once(self, method: str, path: str, body: dict | None, field: str | None) -> Any:
        import http.client
        import urllib.error  # here: urllib.request costs the edge agent, which never calls a registry, 3 MB
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read(64 * 1024).decode(errors="replace")
            detail = body[:300]
            if exc.code == 404 and _error_code(body) // 100 == 404:  # the registry's own "not found" (40403, ...)
                raise UnknownSchemaError(f"schema registry {self.url}{path}: not found ({detail})") from None
            where = f"schema registry {self.url}{path}"
            if method == "POST" and 400 <= exc.code < 500 and exc.code not in (401, 403, 404, 429):
                raise SchemaError(f"{where} refused the request ({exc.code}): {detail}") from None
            hint = "" if exc.code >= 500 or exc.code == 429 else (
                "; check the registry credentials ([schema_registry] username/password)" if exc.code in (401, 403)
                else "; is EDDYLINE_SCHEMA_REGISTRY_URL the registry's base URL?")
            raise RegistryUnavailableError(f"{where} answered {exc.code}: {detail}{hint}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:  # ValueError: not JSON
            reason = getattr(exc, "reason", exc)
            raise RegistryUnavailableError(
                f"schema registry at {self.url} is unreachable ({type(exc).__name__}: {reason}); "
                "check EDDYLINE_SCHEMA_REGISTRY_URL"
            ) from None
        if field is None:
            return answer
        value = answer.get(field) if isinstance(answer, dict) else None
        if type(value) is not _FIELDS[field]:  # another service at that URL: never a reason to dead-letter
            raise RegistryUnavailableError(
                f"schema registry {self.url}{path} answered without {field!r} ({str(answer)[:200]}); "
                "is EDDYLINE_SCHEMA_REGISTRY_URL a schema registry?")
        return value

    def _call(self, method: str, path: str, body: dict | None = None, field: str | None = None) -> Any:
        """One request, retried with back-off while the registry is unavailable (for ever with ``pause``); with
        ``field``, that field of the answer (``id`` or ``schema``)."""
        attempt, wait, since, told = 0, self.backoff_s, time.monotonic(), 0.0
        while True:
            try:
                answer = self._once(method, path, body, field)
                if told:
                    log.warning("schema registry %s answers again after %.1f s; consumption resumes",
                                self.url, time.monotonic() - since)
                return answer
            except RegistryUnavailableError as exc:
                attempt += 1
                if attempt > self.retries and not self.pause:
                    raise
                waited = time.monotonic() - since
                if self.pause and attempt > self.retries and (not told or waited - told >= 60):
                    log.warning("%s; consumption paused, retrying every %.0f s (paused %.0f s so far)",
                                exc, wait, waited)
                    told = max(waited, 1e-9)
                self._sleep(wait)
                wait = min(wait * 2, self.max_backoff_s)

    def id_for(self, topic: str, version: SchemaVersion) -> int:
        """Register the schema under ``<topic>-value`` (or find it registered) and return its id, cached.

        Parameters
        ----------
        topic, version
            As for ``Registry.id_for``.
        """
        key = (topic, version.canonical)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        # The full schema, not the canonical form: the registry's compatibility checks need the defaults.
        schema_id = self._call("POST", f"/subjects/{topic}-value/versions", {"schema": json.dumps(version.schema)},
                               field="id")
        with self._lock:
            self._ids[key] = schema_id
            self._schemas[schema_id] = version.canonical
        return schema_id

    def schema_for(self, schema_id: int) -> str:
        """The schema registered under an id, asked of the registry once and cached; unknown ids for a while.

        Parameters
        ----------
        schema_id
            As for ``Registry.schema_for``.
        """
        try:
            return self._registered(schema_id)
        except UnknownSchemaError:
            if self.fallback is None:
                raise
            try:
                return self.fallback.schema_for(schema_id)
            except UnknownSchemaError:
                pass
            raise

    def _registered(self, schema_id: int) -> str:
        with self._lock:
            if schema_id in self._schemas:
                return self._schemas[schema_id]
            missing = self._missing.get(schema_id)
            if missing is not None and missing[0] > time.monotonic():
                raise UnknownSchemaError(missing[1])
        if schema_id > MAX_ID:  # a corrupt header: asking would read as a wrong URL and pause the flow for good
            raise UnknownSchemaError(f"schema id {schema_id} is past {MAX_ID}, which no schema registry gives")
        try:
            schema = self._call("GET", f"/schemas/ids/{schema_id}", field="schema")
        except UnknownSchemaError as exc:
            with self._lock:
                if len(self._missing) >= MAX_MISSING:  # random ids from a hostile producer: memory stays bounded
                    self._missing.clear()
                self._missing[schema_id] = (time.monotonic() + self.negative_ttl_s, str(exc))
            raise
        with self._lock:
            self._schemas[schema_id] = schema
            self._missing.pop(schema_id, None)
        return schema
