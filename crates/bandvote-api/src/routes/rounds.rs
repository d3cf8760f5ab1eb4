//! The show's rounds (DESIGN.md, "Rounds"): `GET /api/rounds` and a final round's certified
//! result (`GET /api/rounds/{id}/result`) for everyone; `POST /api/admin/rounds`, `PUT` and `DELETE
//! /api/admin/rounds/{id}` (a round that never opened), `POST
//! /api/admin/rounds/{id}/open|close|reveal|hide` and the CSV exports (`GET
//! /api/rounds/{id}/results.csv`, `/votes.csv`, streamed) for the operator.

use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bandvote_core::round::{self, Action, NewRound, Round, RoundError, UpdateError};
use bandvote_runtime::http::{ApiError, json};
use chrono::Utc;
use futures::StreamExt;
use serde_json::json;

use bandvote_runtime::per_client::client_address;

use crate::{
    ApiState,
    routes::admin::{is_operator, read_body},
};

/// Every round, newest first, and the server's time: `{"now", "rounds": [round, …]}`.
pub async fn get_rounds(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let mut rounds = state.store.load_rounds().await?;
    round::newest_first(&mut rounds);
    let now = Utc::now();
    let mut views = Vec::with_capacity(rounds.len());
    for round in &rounds {
        views.push(view(&state, round).await?);
    }
    Ok(json(StatusCode::OK, json!({"now": bandvote_core::time::format(now), "rounds": views})))
}

/// Creates a round: `201` and the round.
pub async fn post_round(State(state): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let new = new_round(&read_body(body).await?)?;
    let round = round::update(state.store.rounds().as_ref(), |rounds, now| round::create(rounds, new.clone(), now))
        .await
        .map_err(refused)?;
    tracing::info!(round = round.id, "round created");
    Ok(json(StatusCode::CREATED, view(&state, &round).await?))
}

/// The body of a create or a change.
fn new_round(body: &[u8]) -> Result<NewRound, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(
            format!(
                "a round is {{\"id\", \"title\", \"opens_at\"?, \"closes_at\"?, \"results\"?, \"ballot\"?: \
                 [{{\"name\", \"album\", \"year\"}}]}}: {error}"
            ),
            None,
        )
    })
}

/// Changes a round that never opened (its title, window, results and ballot): `200` and the
/// round; `409` once it has opened.
pub async fn put_round(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let new = new_round(&read_body(body).await?)?;
    let round =
        round::update(state.store.rounds().as_ref(), |rounds, now| round::replace(rounds, &id, new.clone(), now))
            .await
            .map_err(refused)?;
    tracing::info!(round = round.id, "round changed");
    Ok(json(StatusCode::OK, view(&state, &round).await?))
}

/// Deletes a round that never opened: `204`; `409` once it has opened.
pub async fn delete_round(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    round::delete(state.store.rounds().as_ref(), &id).await.map_err(refused)?;
    tracing::info!(round = id, "round deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What the operator watches of a round during the show: `{"round", "total", "refused": {"closed",
/// "ballot", "fairness", "invalid"}, "viewers"}`: its votes, the votes the gateways refused in it
/// (after its close, `closed` counts the late ones) and the clients on the live stream now.
pub async fn get_round_stats(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    find(&state, &id).await?;
    let total = state.store.round_total(&id).await?;
    let stored = state.store.round_refusals(&id).await?;
    let mut refused: std::collections::BTreeMap<String, u64> =
        ["closed", "ballot", "fairness", "invalid"].into_iter().map(|reason| (reason.to_owned(), 0)).collect();
    refused.extend(stored);
    let stats = json!({"round": id, "total": total, "refused": refused, "viewers": state.events.listeners()});
    Ok(json(StatusCode::OK, stats))
}

/// Opens, closes, reveals or hides a round: `200` and the round.
pub async fn post_round_action(
    State(state): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Some(action) = Action::parse(&action) else {
        return Err(ApiError::client(StatusCode::NOT_FOUND, "no such route", None));
    };
    let round = round::update(state.store.rounds().as_ref(), |rounds, now| round::change(rounds, &id, action, now))
        .await
        .map_err(refused)?;
    tracing::info!(round = round.id, ?action, "round changed");
    Ok(json(StatusCode::OK, view(&state, &round).await?).into_response())
}

/// The contract's view of `round` now.
async fn view(state: &ApiState, round: &Round) -> Result<serde_json::Value, ApiError> {
    let total = state.store.round_total(&round.id).await?;
    Ok(round.view(Utc::now(), total))
}

fn refused(error: UpdateError) -> ApiError {
    match error {
        UpdateError::Refused(RoundError::Invalid { field, message }) => ApiError::bad_request(message, Some(field)),
        UpdateError::Refused(error @ RoundError::NotFound(_)) => {
            ApiError::client(StatusCode::NOT_FOUND, error.to_string(), None)
        }
        UpdateError::Refused(RoundError::Conflict(message)) => ApiError::client(StatusCode::CONFLICT, message, None),
        UpdateError::Store(error) => ApiError::unavailable_because(error, std::time::Duration::from_secs(1)),
    }
}

/// The round `id` as stored (`None` for `default`, which always exists); `404` for another.
pub(crate) async fn find(state: &ApiState, id: &str) -> Result<Option<Round>, ApiError> {
    if id == round::DEFAULT_ROUND {
        return Ok(None);
    }
    let rounds = state.store.load_rounds().await?;
    match rounds.into_iter().find(|r| r.id == id) {
        Some(found) => Ok(Some(found)),
        None => Err(ApiError::client(StatusCode::NOT_FOUND, format!("no round {id}"), None)),
    }
}

/// A final round's certified result; `409` before it is final (and, for the public, while it is
/// hidden).
pub async fn get_round_result(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, final_round(&state, &id, &headers, &extensions).await?))
}

/// The final round `id` whose results the asker may see: `409` for the default round, a round not
/// final yet, or one whose results are hidden (but to the operator).
async fn final_round(
    state: &ApiState,
    id: &str,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> Result<bandvote_core::round::Certified, ApiError> {
    let Some(round) = find(state, id).await? else {
        return Err(ApiError::client(StatusCode::CONFLICT, "the default round is never closed", None));
    };
    if round.is_hidden() && !is_operator(state, headers, client_address(extensions)) {
        return Err(ApiError::client(StatusCode::CONFLICT, "the results are hidden until the host reveals them", None));
    }
    round.certified.ok_or_else(|| ApiError::client(StatusCode::CONFLICT, format!("round {id} is not final yet"), None))
}

/// `GET /api/rounds/{id}/proof/{vote}`: a receipt's proof that its vote is a leaf of the round's
/// certified Merkle tree (DESIGN.md, "Receipts"): the leaf, its index, the tree's size, RFC 6962's
/// audit path and the root; `404` for a vote not counted in the round, `409` before it is final.
pub async fn get_round_proof(
    State(state): State<ApiState>,
    Path((id, vote)): Path<(String, String)>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Result<Response, ApiError> {
    let certified = final_round(&state, &id, &headers, &extensions).await?;
    let Some(root) = certified.merkle_root else {
        return Err(ApiError::client(
            StatusCode::NOT_FOUND,
            format!("round {id} was certified without receipts"),
            None,
        ));
    };
    let Some((proof, leaf)) = state.store.proof(&id, &vote).await? else {
        return Err(ApiError::client(StatusCode::NOT_FOUND, format!("vote {vote} is not counted in round {id}"), None));
    };
    if proof.root != root {
        return Err(ApiError::unavailable_because(
            format!("round {id}'s stored tree is not its certified one yet"),
            std::time::Duration::from_secs(5),
        ));
    }
    let path: Vec<String> = proof.path.iter().map(bandvote_core::merkle::hex).collect();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({
            "round": id,
            "leaf": leaf,
            "index": proof.index,
            "size": proof.size,
            "path": path,
            "merkle_root": root,
        }),
    ))
}

/// `GET /api/rounds/{id}/leaves.jsonl`: the bulletin board, every leaf of the final round's tree,
/// one canonical JSON per line, in the tree's order, streamed from the log a page at a time.
pub async fn get_round_leaves(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Result<Response, ApiError> {
    let certified = final_round(&state, &id, &headers, &extensions).await?;
    if certified.merkle_root.is_none() {
        return Err(ApiError::client(
            StatusCode::NOT_FOUND,
            format!("round {id} was certified without receipts"),
            None,
        ));
    }
    let late = state.store.late_ids(&id).await?;
    let lines = state.store.round_leaves(&id, late).map(|leaf| match leaf {
        Ok(leaf) => Ok(Bytes::from(leaf.canonical_json() + "\n")),
        Err(error) => {
            tracing::warn!(%error, "leaves cut off");
            Err(std::io::Error::other(error.0))
        }
    });
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jsonl; charset=utf-8"));
    Ok(response)
}

/// `band,album,votes`, one row per album of the round, for the operator.
pub async fn get_results_csv(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    find(&state, &id).await?;
    let counts = state.store.round_counts(&id).await?;
    let mut csv = String::from("band,album,votes\r\n");
    for (key, votes) in &counts.albums {
        let (band, album) = key.split_once(" / ").unwrap_or((key, ""));
        csv.push_str(&format!("{},{},{votes}\r\n", csv_field(band), csv_field(album)));
    }
    Ok(csv_response(&id, "results", Body::from(csv)))
}

/// `id,received_at,path,band,album,year,rank`, one row per logged vote of the round, oldest first,
/// streamed as it is read (usable while votes still arrive), for the operator.
pub async fn get_votes_csv(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    find(&state, &id).await?;
    let header =
        futures::stream::once(async { Ok(Bytes::from_static(b"id,received_at,path,band,album,year,rank\r\n")) });
    let rows = state.store.round_votes(&id).map(|entry| match entry {
        Ok(entry) => {
            let field = |name: &str| csv_field(entry.data.get(name).and_then(Option::as_deref).unwrap_or(""));
            let row = format!(
                "{},{},{},{},{},{},{}\r\n",
                csv_field(&entry.id),
                csv_field(&entry.received_at),
                csv_field(&entry.path),
                field("name"),
                field("album"),
                field("year"),
                field("rank")
            );
            Ok(Bytes::from(row))
        }
        // The rows so far are sent; the cut-off export ends with the connection's error.
        Err(error) => {
            tracing::warn!(%error, "votes export cut off");
            Err(std::io::Error::other(error.0))
        }
    });
    Ok(csv_response(&id, "votes", Body::from_stream(header.chain(rows))))
}

fn csv_response(id: &str, what: &str, body: Body) -> Response {
    let disposition = format!("attachment; filename=\"{id}-{what}.csv\"");
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// A CSV text cell, always quoted (so that a `;`-separated spreadsheet does not split it either),
/// and prefixed with `'` when it starts with `=`, `+`, `-`, `@`, a tab or a carriage return, so that
/// a spreadsheet shows it as text instead of reading a formula (OWASP, "CSV Injection").
fn csv_field(text: &str) -> String {
    let prefix = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { "'" } else { "" };
    format!("\"{prefix}{}\"", text.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("Alux Nahual"), "\"Alux Nahual\"");
        assert_eq!(csv_field("Rock, chapin"), "\"Rock, chapin\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        for (cell, shown) in [
            ("=cmd|' /C calc'!A0", "\"'=cmd|' /C calc'!A0\""),
            ("+1", "\"'+1\""),
            ("-1", "\"'-1\""),
            ("@x", "\"'@x\""),
            ("\tx", "\"'\tx\""),
            ("\rx", "\"'\rx\""),
            // A `;`-separated spreadsheet would make `=cmd|...` a cell of its own.
            ("Fans;=cmd|' /C calc'!A0", "\"Fans;=cmd|' /C calc'!A0\""),
            ("", "\"\""),
        ] {
            assert_eq!(csv_field(cell), shown, "{cell:?}");
        }
    }
}
