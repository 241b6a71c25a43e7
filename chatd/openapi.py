"""The server API's OpenAPI 3.1 document, served at /api/openapi.json (docs/api.md tells the
same in prose). tests/e2e/test_server_api.py checks the running daemon's answers against it."""

from __future__ import annotations


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    text = {
        400: "Bad input (code: bad_request, bad_json, bad_room, bad_text, text_too_long, bad_id,"
        " bad_name, bad_frame)",
        401: "Missing or wrong bearer key (code: unauthorized)",
        403: "Not allowed (code: forbidden), e.g. 'from' is not one of [api] bots",
        404: "No such room (unknown_room) or path (not_found)",
        405: "Wrong method (method_not_allowed)",
        409: "Not possible here (not_support_room, no_revocation_list)",
        413: "Body larger than [api] max_body (too_large)",
        503: "Not stored in time, transcripts not writable, or (Redis mode) Redis did not"
        " answer (unavailable); retry",
    }
    return {str(s): _json(_ref("Error"), text[s]) for s in (401, 405, 413, *statuses)}


_ROOM = {"name": "room", "in": "path", "required": True, "schema": {"type": "string"}}
_STRING = {"type": "string"}
_INTEGER = {"type": "integer", "minimum": 0}
_SEQ = {"type": "integer", "minimum": 1}

SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": _STRING, "message": _STRING},
            }
        },
    },
    "Event": {
        "type": "object",
        "description": "A room event exactly as clients receive it and transcripts hold it.",
        "required": ["type", "room", "epoch", "seq", "ts"],
        "properties": {
            "type": _STRING,
            "room": _STRING,
            "epoch": _STRING,
            "seq": _SEQ,
            "ts": _STRING,
            "bot": {"type": "boolean"},
        },
    },
    "Posted": {
        "type": "object",
        "required": ["room", "epoch", "seq"],
        "properties": {"room": _STRING, "epoch": _STRING, "seq": _SEQ, "id": _STRING},
        "additionalProperties": False,
    },
    "RoomList": {
        "type": "object",
        "required": ["rooms", "next"],
        "properties": {
            "rooms": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["room", "loaded"],
                    "properties": {
                        "room": _STRING,
                        "loaded": {"type": "boolean"},
                        "epoch": _STRING,
                        "seq": _INTEGER,
                        "members": _INTEGER,
                    },
                    "additionalProperties": False,
                },
            },
            "next": {"type": ["string", "null"]},
        },
        "additionalProperties": False,
    },
    "Room": {
        "type": "object",
        "required": ["room", "epoch", "seq", "members"],
        "properties": {
            "room": _STRING,
            "epoch": _STRING,
            "seq": _INTEGER,
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["user", "name", "sessions"],
                    # sessions: on the answering node (Redis mode: 0 for a member there
                    # only through other nodes)
                    "properties": {"user": _STRING, "name": _STRING, "sessions": _INTEGER},
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    },
    "History": {
        "type": "object",
        "required": ["room", "epoch", "events", "more"],
        "properties": {
            "room": _STRING,
            "epoch": _STRING,
            "events": {"type": "array", "items": _ref("Event")},
            "more": {"type": "boolean"},
        },
        "additionalProperties": False,
    },
    "User": {
        "type": "object",
        "required": ["user", "online", "sessions", "names", "rooms"],
        "properties": {
            "user": _STRING,
            "online": {"type": "boolean"},
            "sessions": _INTEGER,
            "names": {"type": "array", "items": _STRING},
            "rooms": {"type": "array", "items": _STRING},
        },
        "additionalProperties": False,
    },
    "Disconnected": {
        "type": "object",
        "required": ["user", "closed", "revoked"],
        "properties": {"user": _STRING, "closed": _INTEGER, "revoked": {"type": "boolean"}},
        "additionalProperties": False,
    },
    "Closed": {
        "type": "object",
        "required": ["room", "closed"],
        "properties": {"room": _STRING, "closed": _INTEGER},
        "additionalProperties": False,
    },
}


def _body(properties: dict, required: list[str]) -> dict:
    schema = {"type": "object", "required": required, "properties": properties}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "chatd server API",
        "version": "1",
        "description": "For the website's backend. Authenticate with 'Authorization: Bearer"
        " KEY' (a key from [api] keys_file). Errors are {error: {code, message}}.",
    },
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "The OpenAPI document"}},
            }
        },
        "/api/publish": {
            "post": {
                "summary": "Post a message as a bot, answered once it is durable",
                "requestBody": _body(
                    {"room": _STRING, "text": _STRING, "from": _STRING, "id": _STRING},
                    ["room", "text", "from", "id"],
                ),
                "responses": {
                    "200": _json(_ref("Posted"), "Stored and delivered; a retry: the same seq"),
                    **_errors(400, 403, 503),
                },
            }
        },
        "/api/rooms": {
            "get": {
                "summary": "Rooms in memory or with a transcript (Redis mode: or known to"
                " Redis), by name",
                "parameters": [
                    {"name": "after", "in": "query", "schema": _STRING},
                    {"name": "limit", "in": "query", "schema": {**_SEQ, "maximum": 1000}},
                ],
                "responses": {
                    "200": _json(_ref("RoomList"), "A page of rooms"),
                    **_errors(400, 503),
                },
            }
        },
        "/api/rooms/{room}": {
            "get": {
                "summary": "A room's epoch, seq and members (Redis mode: on every node)",
                "parameters": [_ROOM],
                "responses": {"200": _json(_ref("Room"), "The room"), **_errors(400, 404, 503)},
            }
        },
        "/api/rooms/{room}/history": {
            "get": {
                "summary": "A page of a room's events before a seq, oldest first",
                "parameters": [
                    _ROOM,
                    {"name": "before", "in": "query", "schema": _SEQ},
                    {"name": "limit", "in": "query", "schema": _SEQ},
                ],
                "responses": {"200": _json(_ref("History"), "Events"), **_errors(400, 404, 503)},
            }
        },
        "/api/rooms/{room}/close": {
            "post": {
                "summary": "Every session in the room leaves it (presence leave events)",
                "parameters": [_ROOM],
                "responses": {"200": _json(_ref("Closed"), "Closed"), **_errors(400, 404)},
            }
        },
        "/api/rooms/{room}/resolve": {
            "post": {
                "summary": "Resolve a support conversation as a bot (a status event)",
                "parameters": [_ROOM],
                "requestBody": _body({"from": _STRING, "id": _STRING}, ["from"]),
                "responses": {
                    "200": _json(_ref("Posted"), "Stored"),
                    **_errors(400, 403, 404, 409, 503),
                },
            }
        },
        "/api/rooms/{room}/assign": {
            "post": {
                "summary": "Assign a support conversation to a connected agent, or to nobody,"
                " as a bot (an assignment event)",
                "parameters": [_ROOM],
                "requestBody": _body(
                    {"agent": {"type": ["string", "null"]}, "from": _STRING, "id": _STRING},
                    ["agent", "from"],
                ),
                "responses": {
                    "200": _json(_ref("Posted"), "Stored"),
                    **_errors(400, 403, 404, 409, 503),
                },
            }
        },
        "/api/users/{user}": {
            "get": {
                "summary": "Whether a user is online, with how many sessions, in which rooms",
                "parameters": [{"name": "user", "in": "path", "required": True, "schema": _STRING}],
                "responses": {"200": _json(_ref("User"), "The user"), **_errors(400, 503)},
            }
        },
        "/api/disconnect": {
            "post": {
                "summary": "Close every connection of a user (and optionally revoke the user)",
                "requestBody": _body(
                    {
                        "user": _STRING,
                        "code": {"type": "integer"},
                        "reason": _STRING,
                        "revoke": {"type": "boolean"},
                    },
                    ["user"],
                ),
                "responses": {
                    "200": _json(_ref("Disconnected"), "Closed"),
                    **_errors(400, 409, 503),
                },
            }
        },
    },
}
