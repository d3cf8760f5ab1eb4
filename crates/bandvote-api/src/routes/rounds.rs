//! The show's rounds (DESIGN.md, "Rounds"): `GET /api/rounds` for everyone; `POST
//! /api/admin/rounds` and `POST /api/admin/rounds/{id}/open|close|reveal|hide` for the operator.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bandvote_core::round::{self, Action, NewRound, Round, RoundError, UpdateError};
use bandvote_runtime::http::{ApiError, json};
use chrono::Utc;
use serde_json::json;

use crate::{ApiState, routes::admin::refusal};

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
pub async fn post_round(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    if let Some(refused) = refusal(&state, &headers) {
        return Ok(refused);
    }
    let new: NewRound = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(
            format!("a round is {{\"id\", \"title\", \"opens_at\"?, \"closes_at\"?, \"results\"?}}: {error}"),
            None,
        )
    })?;
    let round = round::update(state.store.rounds().as_ref(), |rounds, now| round::create(rounds, new.clone(), now))
        .await
        .map_err(refused)?;
    tracing::info!(round = round.id, "round created");
    Ok(json(StatusCode::CREATED, view(&state, &round).await?))
}

/// Opens, closes, reveals or hides a round: `200` and the round.
pub async fn post_round_action(
    State(state): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(refused) = refusal(&state, &headers) {
        return Ok(refused);
    }
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
    Ok(round.view(Utc::now(), total, false))
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
