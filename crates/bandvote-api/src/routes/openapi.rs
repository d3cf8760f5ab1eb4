//! `GET /api/openapi.json`: the API described in OpenAPI 3.1.

use axum::Json;
use serde_json::{Value, json};

/// The OpenAPI document of the API.
pub async fn get_openapi() -> Json<Value> {
    Json(document())
}

/// The document itself (also used by tests).
pub fn document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let unavailable =
        json!({"description": "a store did not answer", "content": {"application/json": {"schema": error}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "bandvote API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Live results of the contest and the vote log."},
        "paths": {
            "/api/results": {"get": {
                "summary": "A round's counters: without `round` the open round, else the latest closed one, else `default`; a hidden round shows the public only its total (the admin bearer token sees everything)",
                "parameters": [{"name": "round", "in": "query", "required": false, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the counters", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Results"}}}},
                    "404": {"description": "no such round", "content": {"application/json": {"schema": error}}},
                    "503": unavailable
                }
            }},
            "/api/rounds": {"get": {
                "summary": "Every round, newest first, and the server's time (for countdowns)",
                "responses": {
                    "200": {"description": "the rounds", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["now", "rounds"], "properties": {
                            "now": {"type": "string", "format": "date-time"},
                            "rounds": {"type": "array", "items": {"$ref": "#/components/schemas/Round"}}
                        }
                    }}}},
                    "503": unavailable
                }
            }},
            "/api/rounds/{id}/result": {"get": {
                "summary": "A final round's certified result: {round, closed_at, total, bands, albums, leaves, merkle_root, sha256}: leaves and merkle_root are the RFC 6962 Merkle tree of its counted votes, sha256 the hex SHA-256 of the object without it as canonical JSON (keys sorted, no spaces)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the certified result"},
                    "404": {"description": "no such round", "content": {"application/json": {"schema": error}}},
                    "409": {"description": "not final yet (or hidden, for the public)", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/rounds/{id}/proof/{vote}": {"get": {
                "summary": "A receipt's proof: {round, leaf: {album, band, id, rank, round, year}, index, size, path, merkle_root}, path being RFC 6962's audit path (hex, from the leaf up) of the leaf at index in the certified tree of size leaves",
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "vote", "in": "path", "required": true, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "the proof"},
                    "404": {"description": "no such round, or the vote is not counted in it", "content": {"application/json": {"schema": error}}},
                    "409": {"description": "not final yet (or hidden, for the public)", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/rounds/{id}/leaves.jsonl": {"get": {
                "summary": "The bulletin board: every leaf of the final round's tree, one canonical JSON per line, ordered by id (bytewise); its counts are the certified ones and its RFC 6962 root the merkle_root",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the leaves", "content": {"application/jsonl": {}}},
                    "404": {"description": "no such round", "content": {"application/json": {"schema": error}}},
                    "409": {"description": "not final yet (or hidden, for the public)", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/rounds/{id}/results.csv": {"get": {
                "summary": "The round's results as CSV, band,album,votes (admin bearer token)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "CSV", "content": {"text/csv": {}}}, "401": {"description": "no or a wrong bearer token"}, "404": {"description": "no such round"}}
            }},
            "/api/rounds/{id}/votes.csv": {"get": {
                "summary": "Every logged vote of the round as CSV, id,received_at,path,band,album,year,rank, oldest first, streamed (admin bearer token)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "CSV", "content": {"text/csv": {}}}, "401": {"description": "no or a wrong bearer token"}, "404": {"description": "no such round"}}
            }},
            "/api/admin/rounds": {"post": {
                "summary": "Creates a round (admin bearer token): {id, title, opens_at?, closes_at?, results?: live|hidden, ballot?: [{name, album, year}]}; with a ballot, votes must be one of its 1-64 entries (422 otherwise)",
                "responses": {
                    "201": {"description": "the round", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Round"}}}},
                    "400": {"description": "an invalid field, named", "content": {"application/json": {"schema": error}}},
                    "401": {"description": "no or a wrong bearer token"},
                    "409": {"description": "the id exists, or the window overlaps another round's", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/admin/rounds/{id}": {
                "put": {
                    "summary": "Changes a round that never opened (admin bearer token): the same body as the create, the id unchanged",
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "the round", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Round"}}}},
                        "400": {"description": "an invalid field, named", "content": {"application/json": {"schema": error}}},
                        "401": {"description": "no or a wrong bearer token"},
                        "404": {"description": "no such round", "content": {"application/json": {"schema": error}}},
                        "409": {"description": "the round has opened: its window and ballot are frozen", "content": {"application/json": {"schema": error}}}
                    }
                },
                "delete": {
                    "summary": "Deletes a round that never opened (admin bearer token)",
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {
                        "204": {"description": "deleted"},
                        "401": {"description": "no or a wrong bearer token"},
                        "404": {"description": "no such round", "content": {"application/json": {"schema": error}}},
                        "409": {"description": "the round has opened", "content": {"application/json": {"schema": error}}}
                    }
                }
            },
            "/api/admin/rounds/{id}/stats": {"get": {
                "summary": "What the operator watches of a round (admin bearer token): {round, total, refused: {closed, ballot, fairness, invalid}, viewers}: its votes, the votes the gateways refused in it (after its close, closed counts the late ones; written every 200 ms) and the clients on this API's live stream now",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the round's figures", "content": {"application/json": {}}},
                    "401": {"description": "no or a wrong bearer token"},
                    "404": {"description": "no such round", "content": {"application/json": {"schema": error}}},
                    "503": unavailable
                }
            }},
            "/api/admin/rounds/{id}/{action}": {"post": {
                "summary": "Opens, closes, reveals or hides a round (admin bearer token)",
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "action", "in": "path", "required": true, "schema": {"type": "string", "enum": ["open", "close", "reveal", "hide"]}}
                ],
                "responses": {
                    "200": {"description": "the round", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Round"}}}},
                    "401": {"description": "no or a wrong bearer token"},
                    "404": {"description": "no such round", "content": {"application/json": {"schema": error}}},
                    "409": {"description": "another round is open, or this one is closed", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/admin/audit": {"get": {
                "summary": "The counters against the vote log (admin bearer token): all-time, or one round's with `round`; a whole scan of the log",
                "parameters": [{"name": "round", "in": "query", "required": false, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "{round?, counted, logged, agree}: counted and logged are {total, bands, albums}", "content": {"application/json": {}}},
                    "401": {"description": "no or a wrong bearer token"},
                    "404": {"description": "no such round", "content": {"application/json": {"schema": error}}},
                    "503": unavailable
                }
            }},
            "/api/admin/pipeline": {"get": {
                "summary": "How far the log is behind the counters (admin bearer token): {counted, logged, updated_at, freshness_ms}",
                "responses": {
                    "200": {"description": "the totals of both stores", "content": {"application/json": {}}},
                    "401": {"description": "no or a wrong bearer token"},
                    "503": unavailable
                }
            }},
            "/admin": {"get": {"summary": "The operator console (the web app's operator view)", "responses": {"200": {"description": "HTML"}}}},
            "/screen": {"get": {"summary": "The venue's projector view: the open round, a QR code of the audience page, the reveal", "responses": {"200": {"description": "HTML"}}}},
            "/api/logs": {"get": {
                "summary": "The newest votes, newest first",
                "parameters": [{"name": "limit", "in": "query", "required": false,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}}],
                "responses": {
                    "200": {"description": "log entries", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/LogEntry"}}}}},
                    "400": {"description": "limit out of range", "content": {"application/json": {"schema": error}}},
                    "503": unavailable
                }
            }},
            "/api/stream": {"get": {
                "summary": "Server-Sent Events, each with an increasing `id` (reconnect with `Last-Event-ID` to resume): `ping` after 15 s of silence; `results` (as /api/results) when the counters change, at most every 250 ms; `log` (one /api/logs item) per logged vote, a hidden round's left out; `status` when a store stops or resumes answering; `round` ({now, rounds}) when a round opens, closes, is hidden, revealed or made final",
                "parameters": [{"name": "logs", "in": "query", "required": false,
                                "description": "at most the newest N `log` events of each 250 ms (a ticker of the latest votes); all without it",
                                "schema": {"type": "integer", "minimum": 0, "maximum": 500}}],
                "responses": {
                    "200": {"description": "an event stream", "content": {"text/event-stream": {}}},
                    "400": {"description": "logs out of range", "content": {"application/json": {"schema": error}}},
                    "503": {"description": "the live stream has all its clients, or this address its share; Retry-After says when to try again", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/api/config": {"get": {
                "summary": "What the web app needs to know: where it posts votes (`\"\"` = this origin, null = no vote form), whether votes carry a voter token and in which header, the audience page's public address (null: the page's own origin)",
                "responses": {"200": {"description": "the web app's configuration", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["vote_url", "public_url"], "properties": {
                        "vote_url": {"type": ["string", "null"]},
                        "public_url": {"type": ["string", "null"]},
                        "voter_token": {"type": "boolean"},
                        "voter_header": {"type": "string"}
                    }
                }}}}}
            }},
            "/api/voter-token": {"post": {
                "summary": "A signed voter token (24 h) naming a new voter, to send in the gateways' voter header; 404 unless a voter secret is configured",
                "responses": {"200": {"description": "{token, voter, expires_at}"}, "404": {"description": "voter tokens are not enabled"}, "429": {"description": "this client address has had its voter tokens for this minute (Retry-After)"}}
            }},
            "/": {"get": {"summary": "The web app (embedded static files)", "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}}
        },
        "components": {"schemas": {
            "Round": {"type": "object", "required": ["id", "title", "state", "opens_at", "closes_at", "results", "final", "total", "ballot"], "properties": {
                "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,63}$"},
                "title": {"type": "string"},
                "state": {"type": "string", "enum": ["scheduled", "open", "closed"]},
                "opens_at": {"type": ["string", "null"], "format": "date-time"},
                "closes_at": {"type": ["string", "null"], "format": "date-time"},
                "results": {"type": "string", "enum": ["live", "hidden", "revealed"]},
                "final": {"type": "boolean"},
                "total": {"type": "integer"},
                "ballot": {"type": "array", "description": "the choices (empty: free text)", "items": {"type": "object", "required": ["name", "album", "year"], "properties": {
                    "name": {"type": "string"}, "album": {"type": "string"}, "year": {"type": "integer", "minimum": 1000, "maximum": 9999}
                }}}
            }},
            "Results": {"type": "object", "required": ["total", "bands", "albums", "updated_at", "freshness_ms", "round", "hidden", "final"], "properties": {
                "round": {"type": "string"},
                "hidden": {"type": "boolean", "description": "the public sees only the total"},
                "final": {"type": "boolean", "description": "every vote answered 202 for the round is counted"},
                "total": {"type": "integer"},
                "bands": {"type": "object", "additionalProperties": {"type": "integer"}},
                "albums": {"type": "object", "description": "keys are `<band> / <album>`", "additionalProperties": {"type": "integer"}},
                "updated_at": {"type": ["string", "null"], "format": "date-time", "description": "when the newest counted vote was counted; null before the first vote"},
                "freshness_ms": {"type": ["integer", "null"], "description": "how long after its received_at the newest vote was counted"}
            }},
            "LogEntry": {"type": "object", "required": ["id", "data", "path", "received_at", "round"], "properties": {
                "id": {"type": "string"},
                "round": {"type": "string"},
                "data": {"type": "object", "properties": {"name": {"type": "string"}, "album": {"type": "string"}, "year": {"type": "string"}, "rank": {"type": ["string", "null"]}}},
                "path": {"type": "string", "enum": ["grpc", "wasm"]},
                "received_at": {"type": "string", "format": "date-time"}
            }},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "field": {"type": "string"}}}
        }}
    })
}
