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
                "summary": "Live counters",
                "responses": {
                    "200": {"description": "the counters", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Results"}}}},
                    "503": unavailable
                }
            }},
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
                "summary": "Server-Sent Events: `results` (as /api/results) when the counters change, at most every 250 ms; `log` (one /api/logs item) per logged vote; `status` when a store stops or resumes answering",
                "responses": {"200": {"description": "an event stream", "content": {"text/event-stream": {}}}}
            }},
            "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/api/config": {"get": {
                "summary": "What the web app needs to know: where it posts votes (`\"\"` = this origin, null = no vote form)",
                "responses": {"200": {"description": "the web app's configuration", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["vote_url"], "properties": {"vote_url": {"type": ["string", "null"]}}
                }}}}}
            }},
            "/api/voter-token": {"post": {
                "summary": "A signed voter token (24 h) naming a new voter, to send in the gateways' voter header; 404 unless a voter secret is configured",
                "responses": {"200": {"description": "{token, voter, expires_at}"}, "404": {"description": "voter tokens are not enabled"}, "429": {"description": "this client address has had its voter tokens for this minute (Retry-After)"}}
            }},
            "/": {"get": {"summary": "The web app (embedded static files)", "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}}
        },
        "components": {"schemas": {
            "Results": {"type": "object", "required": ["total", "bands", "albums", "updated_at", "freshness_ms"], "properties": {
                "total": {"type": "integer"},
                "bands": {"type": "object", "additionalProperties": {"type": "integer"}},
                "albums": {"type": "object", "description": "keys are `<band> / <album>`", "additionalProperties": {"type": "integer"}},
                "updated_at": {"type": ["string", "null"], "format": "date-time", "description": "when the newest counted vote was counted; null before the first vote"},
                "freshness_ms": {"type": ["integer", "null"], "description": "how long after its received_at the newest vote was counted"}
            }},
            "LogEntry": {"type": "object", "required": ["id", "data", "path", "received_at"], "properties": {
                "id": {"type": "string"},
                "data": {"type": "object", "properties": {"name": {"type": "string"}, "album": {"type": "string"}, "year": {"type": "string"}, "rank": {"type": "string"}}},
                "path": {"type": "string", "enum": ["grpc", "wasm"]},
                "received_at": {"type": "string", "format": "date-time"}
            }},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "field": {"type": "string"}}}
        }}
    })
}
