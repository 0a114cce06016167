"""The OpenAPI 3.0 description of the gateway, built from the same Avro walk that validates the bodies."""

from __future__ import annotations

from typing import Any

from connectors.gateway.records import ENDPOINTS, json_schema
from connectors.gateway.settings import GatewaySettings

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ERROR}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def openapi_spec(settings: GatewaySettings) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "A stable code, e.g. invalid_event, backpressure."},
                "message": {"type": "string", "description": "What is wrong and what to do about it."},
                "problems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["path", "message"],
                        "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
                "accepted": {"type": "integer", "minimum": 0,
                             "description": "503 from the broker: how many events, the first of the request, were "
                                            "accepted before it refused the next; they cannot be taken back."},
                "event_ids": {"type": "array", "items": {"type": "string"},
                              "description": "503 from the broker: the id of each event, in the order sent; set "
                                             "them on a retry and the accepted events come again as repeats, "
                                             "which consumers drop."},
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["accepted", "topic", "event_ids"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 1},
                "topic": {"type": "string", "description": "The logical topic (before the namespace prefix)."},
                "event_ids": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The id of each event, in the order sent.",
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "problems", "queue", "max_queue"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "problems": {"type": "array", "items": {"type": "string"}},
                "queue": {"type": "integer"},
                "max_queue": {"type": "integer"},
                "accepted": {"type": "integer"},
                "delivered": {"type": "integer"},
                "failed": {"type": "integer", "description": "Accepted events Kafka never acknowledged."},
                "producers_replaced": {"type": "integer",
                                       "description": "Producers replaced after a fatal error; what they held was "
                                                      "sent again."},
                "refused_backpressure": {"type": "integer"},
            },
        },
    }
    paths: dict[str, Any] = {}
    limit = settings.max_events_per_request
    for endpoint in ENDPOINTS.values():
        name = "".join(part.title() for part in endpoint.event_type.split("_"))
        schemas[name] = json_schema(endpoint.event_type)
        ref = {"$ref": f"#/components/schemas/{name}"}
        paths[endpoint.path] = {
            "post": {
                "operationId": f"post_{endpoint.event_type}",
                "summary": f"Publish {endpoint.title.lower()} to '{endpoint.topic}'",
                "description": (
                    f"One {endpoint.event_type} event, or a JSON array of up to {limit}. Keyed by "
                    f"`{endpoint.key_field}`. Accepted whole or refused whole (but see 503). Bodies over "
                    f"{settings.max_body_bytes} bytes are refused with 413."
                ),
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [ref, {"type": "array", "items": ref, "minItems": 1, "maxItems": limit}]
                            }
                        }
                    },
                },
                "responses": {
                    "202": {
                        "description": "In the producer's queue; the broker acknowledges it shortly after.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
                    },
                    "400": _error("The body is not JSON, or not valid UTF-8."),
                    "401": _error(
                        "No bearer token, or not a known one.", {"WWW-Authenticate": {"schema": {"type": "string"}}}
                    ),
                    "403": _error("The token's scopes ([gateway] scopes) do not include this event type, or its "
                                  "key scopes ([gateway] key_scopes) this event's key."),
                    "408": _error(f"The body did not all arrive within {settings.body_timeout_s:g} s "
                                  "([gateway] body_timeout_s); the connection is closed."),
                    "413": _error("The body is larger than the limit, or the array holds too many events."),
                    "415": _error("The Content-Type is not application/json."),
                    "422": _error("The JSON does not fit the event's schema; 'problems' names each field."),
                    "429": _error(
                        "Backpressure (the broker is behind) or the token's rate ([gateway] rates) is spent "
                        "(refused events count too). Retry after Retry-After seconds with the same event_id.",
                        _RETRY_AFTER,
                    ),
                    "503": _error(
                        "The schema registry or the broker refused the event; retry with the same event_id. A broker "
                        "refusal partway through an array leaves the events before it accepted ('accepted', "
                        "'event_ids').",
                        _RETRY_AFTER,
                    ),
                },
            }
        }
    paths["/health"] = {
        "get": {
            "operationId": "health",
            "summary": "Whether the gateway can take events (no token needed)",
            "security": [],
            "responses": {
                "200": {
                    "description": "Ready.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
                },
                "503": {
                    "description": "Degraded: the producer queue is full or deliveries failed recently.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
                },
            },
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "eddyline producer gateway",
            "version": "1",
            "description": (
                "HTTP and WebSocket entry for producers that do not speak Kafka. Events are validated against "
                "eddyline's Avro schemas and published to Kafka. Avro bytes travel as base64. event_id, "
                "event_time and producer may be left out: the gateway fills them in (a derived event_id is the "
                "same when the same event is retried).\n\n"
                "WebSocket: connect to /v1/ws with the same 'Authorization: Bearer' header, then send text frames "
                '{"type": "sensor_batch" | "audio_chunk" | "click", "event": {...} or [...], "ref": optional}. '
                'Each frame gets one answer {"ref", "status", ...}: status 202 with event_ids, or the HTTP status '
                "the same POST would get with error, message and problems (and retry_after_s for 429)."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
