//! Test-only administration of the Cisco simulator (nested under `/cisco` on the control port):
//! list keys (never secrets), create a key with given capabilities, revoke or delete a key.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::Deserialize;

use super::CiscoSim;
use crate::clients::cisco::Capability;

pub(crate) fn routes() -> Router<CiscoSim> {
    Router::new()
        .route("/credentials", get(list))
        .route("/keys", post(create))
        .route("/keys/{api_key}", delete(remove))
        .route("/keys/{api_key}/revoke", post(revoke))
}

async fn list(State(sim): State<CiscoSim>) -> Response {
    let keys: Vec<_> = sim
        .state()
        .keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "id": k.id,
                "apiKey": k.api_key,
                "description": k.description,
                "capabilities": k.capabilities.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "revoked": k.revoked,
                "createdBy": k.created_by,
                "createdAt": k.created_at,
            })
        })
        .collect();
    Json(keys).into_response()
}

#[derive(Deserialize)]
struct CreateKey {
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    description: String,
}

async fn create(State(sim): State<CiscoSim>, Json(body): Json<CreateKey>) -> Response {
    let capabilities: Result<Vec<Capability>, _> = body.capabilities.iter().map(|c| c.parse::<Capability>()).collect();
    let capabilities = match capabilities {
        Ok(c) => c,
        Err(e) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({ "error": e.to_string() })))
                .into_response();
        }
    };
    let (api_key, api_secret) = sim.create_key(&body.description, &capabilities);
    let id = sim.state().keys.iter().find(|k| k.api_key == api_key).map(|k| k.id.clone()).unwrap_or_default();
    (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "id": id,
            "apiKey": api_key,
            "apiSecret": api_secret.expose(),
            "description": body.description,
            "capabilities": capabilities.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        })),
    )
        .into_response()
}

async fn revoke(State(sim): State<CiscoSim>, Path(api_key): Path<String>) -> StatusCode {
    if sim.revoke_key(&api_key) { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
}

async fn remove(State(sim): State<CiscoSim>, Path(api_key): Path<String>) -> StatusCode {
    let mut state = sim.state();
    let before = state.keys.len();
    state.keys.retain(|k| k.api_key != api_key);
    if state.keys.len() != before { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
}
