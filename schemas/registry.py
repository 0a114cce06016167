"""Schema registries: where a schema id comes from and what schema an id stands for.

``LocalRegistry`` needs nothing running: ids are derived from each schema's canonical form, so they are
stable across processes, machines and restarts. ``ConfluentRegistry`` speaks the Confluent Schema
Registry REST API when one is configured; subjects follow the TopicNameStrategy (``<topic>-value``).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import zlib
from typing import Protocol

from schemas import catalog
from schemas.catalog import SchemaVersion
from schemas.errors import UnknownSchemaError


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


def local_schema_id(canonical: str) -> int:
    """A stable 31-bit id for a schema: CRC32 of its Parsing Canonical Form.

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
    """A client for a Confluent-compatible Schema Registry, caching ids both ways.

    Subjects follow the TopicNameStrategy (``<topic>-value``); an unreachable registry or an unknown id
    raises ``UnknownSchemaError`` with what to check.

    Parameters
    ----------
    url
        The registry's base URL.
    auth
        (user, password) for HTTP basic authentication, or None.
    timeout
        Seconds to wait for each request.
    """

    def __init__(self, url: str, *, auth: tuple[str, str] | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
        if auth:
            import base64

            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, str] = {}
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            if exc.code == 404:
                raise UnknownSchemaError(f"schema registry {self.url}{path}: not found ({detail})") from None
            raise UnknownSchemaError(f"schema registry {self.url}{path} answered {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise UnknownSchemaError(
                f"schema registry at {self.url} is unreachable ({exc.reason}); check EDDYLINE_SCHEMA_REGISTRY_URL"
            ) from None

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
        answer = self._call("POST", f"/subjects/{topic}-value/versions", {"schema": json.dumps(version.schema)})
        with self._lock:
            self._ids[key] = answer["id"]
            self._schemas[answer["id"]] = version.canonical
        return answer["id"]

    def schema_for(self, schema_id: int) -> str:
        """The schema registered under an id, asked of the registry once and cached.

        Parameters
        ----------
        schema_id
            As for ``Registry.schema_for``.
        """
        with self._lock:
            if schema_id in self._schemas:
                return self._schemas[schema_id]
        schema = self._call("GET", f"/schemas/ids/{schema_id}")["schema"]
        with self._lock:
            self._schemas[schema_id] = schema
        return schema
