//! The OpenAPI routes (behind the gateway): enough for the capability probes, the users calls
//! tetpyclient tests use, and a few reads. Capabilities are enforced per docs/vendor-apis.md §9.2.

use std::collections::HashMap;

use axum::{
    Extension, Router,
    extract::{Path, Query, Request, State},
    http::StatusCode,
    response::Response,
    routing::{get, post},
};

use super::{CiscoSim, JsonError, gateway::AuthenticatedKey, json_error, json_response, now_epoch, random_hex};
use crate::clients::cisco::Capability;

/// The vendor's objects the simulator serves.
#[derive(Debug)]
pub(crate) struct Data {
    pub root_scope_id: String,
    pub users: Vec<serde_json::Value>,
    pub roles: Vec<serde_json::Value>,
}

impl Data {
    pub fn seeded(admin_email: &str) -> Self {
        let root_scope_id = random_hex(12);
        let now = now_epoch();
        let user = |email: &str, first: &str, last: &str, disabled_at: Option<i64>| {
            serde_json::json!({
                "id": random_hex(12),
                "email": email,
                "first_name": first,
                "last_name": last,
                "app_scope_id": root_scope_id,
                "role_ids": [],
                "bypass_external_auth": false,
                "disabled_at": disabled_at,
                "created_at": now,
                "updated_at": now,
            })
        };
        Data {
            users: vec![
                user(admin_email, "Site", "Admin", None),
                user("former.employee@example.com", "Former", "Employee", Some(now - 86_400)),
            ],
            roles: vec![serde_json::json!({
                "id": random_hex(12),
                "app_scope_id": root_scope_id,
                "name": "Default Scope Owner",
                "description": "Owner of the root scope",
            })],
            root_scope_id,
        }
    }
}

pub(crate) fn routes() -> Router<CiscoSim> {
    Router::new()
        .route("/openapi/v1/roles", get(list_roles))
        .route("/openapi/v1/applications", get(list_applications))
        .route("/openapi/v1/sensors", get(list_sensors))
        .route("/openapi/v1/flowsearch/dimensions", get(flow_dimensions))
        .route("/openapi/v1/app_scopes", get(list_scopes))
        .route("/openapi/v1/users", get(list_users).post(create_user))
        .route("/openapi/v1/users/{id}", get(get_user).put(update_user).delete(disable_user))
        .route("/openapi/v1/users/{id}/enable", post(enable_user))
}

/// Unknown paths: 404 (an `/openapi/` request only gets here with a valid signature).
pub(crate) async fn not_found(request: Request) -> Response {
    if request.uri().path().starts_with("/openapi/") {
        json_error(StatusCode::NOT_FOUND, "Not found")
    } else {
        super::text_response(StatusCode::NOT_FOUND, "Not Found")
    }
}

/// Lets the call through when the key holds any of `needed`; otherwise the missing-capability answer.
/// The real service's status and body for this case are UNCONFIRMED (docs/vendor-apis.md §12): 403 with a
/// JSON `{"error": ...}` is our choice, distinct from the gateway's `Invalid request`.
fn require(key: &AuthenticatedKey, needed: &[Capability]) -> Result<(), JsonError> {
    if needed.iter().any(|c| key.capabilities.contains(c)) {
        return Ok(());
    }
    let names = needed.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" or ");
    Err(JsonError::new(StatusCode::FORBIDDEN, format!("API key is not authorized for this request (needs {names})")))
}

type Answer = Result<Response, JsonError>;

async fn list_roles(State(sim): State<CiscoSim>, Extension(key): Extension<AuthenticatedKey>) -> Answer {
    require(&key, &[Capability::UserRoleScopeManagement])?;
    let roles = sim.state().data.roles.clone();
    Ok(json_response(StatusCode::OK, &serde_json::Value::Array(roles)))
}

async fn list_applications(State(sim): State<CiscoSim>, Extension(key): Extension<AuthenticatedKey>) -> Answer {
    require(&key, &[Capability::AppPolicyManagement])?;
    let scope = sim.state().data.root_scope_id.clone();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!([{
            "id": "5d3b5ad1755f0230f1a8d7b0",
            "app_scope_id": scope,
            "name": "Default workspace",
            "description": null,
            "author": "Site Admin",
            "primary": true,
            "enforcement_enabled": false,
            "latest_adm_version": 1,
            "created_at": 1564171985,
        }]),
    ))
}

async fn list_sensors(Extension(key): Extension<AuthenticatedKey>) -> Answer {
    require(&key, &[Capability::SensorManagement])?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "results": [{
                "uuid": "a1f3c2e4b5d6978812345678abcdef0123456789",
                "host_name": "web-01",
                "agent_type": "enforcer",
                "current_sw_version": "3.10.1.1",
                "platform": "Ubuntu-22.04",
                "last_config_fetch_at": now_epoch(),
            }]
        }),
    ))
}

async fn flow_dimensions(Extension(key): Extension<AuthenticatedKey>) -> Answer {
    require(&key, &[Capability::FlowInventoryQuery])?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!(["src_address", "dst_address", "src_port", "dst_port", "proto", "vrf_name"]),
    ))
}

async fn list_scopes(State(sim): State<CiscoSim>, Extension(key): Extension<AuthenticatedKey>) -> Answer {
    require(&key, &[Capability::AppPolicyManagement, Capability::UserRoleScopeManagement])?;
    let id = sim.state().data.root_scope_id.clone();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!([{
            "id": id,
            "short_name": "Default",
            "name": "Default",
            "description": null,
            "short_query": {"type": "eq", "field": "vrf_id", "value": 1},
            "query": {"type": "eq", "field": "vrf_id", "value": 1},
            "vrf_id": 1,
            "parent_app_scope_id": null,
            "child_app_scope_ids": [],
            "policy_priority": 1,
            "dirty": false,
        }]),
    ))
}

async fn list_users(
    State(sim): State<CiscoSim>,
    Extension(key): Extension<AuthenticatedKey>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    require(&key, &[Capability::UserRoleScopeManagement])?;
    let include_disabled = query.get("include_disabled").is_some_and(|v| v == "true" || v == "1");
    let scope = query.get("app_scope_id");
    let users: Vec<_> = sim
        .state()
        .data
        .users
        .iter()
        .filter(|u| include_disabled || u["disabled_at"].is_null())
        .filter(|u| scope.is_none_or(|s| u["app_scope_id"].as_str() == Some(s.as_str())))
        .cloned()
        .collect();
    Ok(json_response(StatusCode::OK, &serde_json::Value::Array(users)))
}

fn bad_request(message: &str) -> JsonError {
    JsonError::new(StatusCode::BAD_REQUEST, message)
}

/// The JSON object of a request body, or the 400 a Rails controller gives for anything else.
fn object_body(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, JsonError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(bad_request("Request body must be a JSON object")),
    }
}

async fn create_user(
    State(sim): State<CiscoSim>,
    Extension(key): Extension<AuthenticatedKey>,
    body: axum::body::Bytes,
) -> Answer {
    require(&key, &[Capability::UserRoleScopeManagement])?;
    let fields = object_body(&body)?;
    let text = |name: &str| fields.get(name).and_then(|v| v.as_str()).filter(|s| !s.trim().is_empty());
    let (Some(email), Some(first), Some(last)) = (text("email"), text("first_name"), text("last_name")) else {
        return Err(bad_request("email, first_name and last_name are required"));
    };
    if !email.contains('@') {
        return Err(bad_request("Email is invalid"));
    }
    let mut state = sim.state();
    if state.data.users.iter().any(|u| u["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(email))) {
        return Err(bad_request("Email has already been taken"));
    }
    let now = now_epoch();
    let user = serde_json::json!({
        "id": random_hex(12),
        "email": email,
        "first_name": first,
        "last_name": last,
        "app_scope_id": fields.get("app_scope_id").cloned().unwrap_or(serde_json::Value::Null),
        "role_ids": fields.get("role_ids").cloned().unwrap_or_else(|| serde_json::json!([])),
        "bypass_external_auth": false,
        "disabled_at": null,
        "created_at": now,
        "updated_at": now,
    });
    state.data.users.push(user.clone());
    Ok(json_response(StatusCode::OK, &user))
}

fn find_user<'a>(users: &'a mut [serde_json::Value], id: &str) -> Result<&'a mut serde_json::Value, JsonError> {
    users
        .iter_mut()
        .find(|u| u["id"].as_str() == Some(id))
        .ok_or_else(|| JsonError::new(StatusCode::NOT_FOUND, "Not found"))
}

async fn get_user(
    State(sim): State<CiscoSim>,
    Extension(key): Extension<AuthenticatedKey>,
    Path(id): Path<String>,
) -> Answer {
    require(&key, &[Capability::UserRoleScopeManagement])?;
    let mut state = sim.state();
    let user = find_user(&mut state.data.users, &id)?;
    Ok(json_response(StatusCode::OK, user))
}

async fn update_user(
    State(sim): State<CiscoSim>,
    Extension(key): Extension<AuthenticatedKey>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    require(&key, &[Capability::UserRoleScopeManagement])?;
    let fields = object_body(&body)?;
    let mut state = sim.state();
    let user = find_user(&mut state.data.users, &id)?;
    for name in ["email", "first_name", "last_name", "app_scope_id"] {
        if let Some(v) = fields.get(name) {
            user[name] = v.clone();
        }
    }
    user["updated_at"] = now_epoch().into();
    Ok(json_response(StatusCode::OK, user))
}

/// DELETE disables the user (reversible with `/enable`), as the `disabled_at` field suggests.
async fn disable_user(
    State(sim): State<CiscoSim>,
    Extension(key): Extension<AuthenticatedKey>,
    Path(id): Path<String>,
) -> Answer {
    require(&key, &[Capability::UserRoleScopeManagement])?;
    let mut state = sim.state();
    let user = find_user(&mut state.data.users, &id)?;
    user["disabled_at"] = now_epoch().into();
    Ok(json_response(StatusCode::OK, user))
}

async fn enable_user(
    State(sim): State<CiscoSim>,
    Extension(key): Extension<AuthenticatedKey>,
    Path(id): Path<String>,
) -> Answer {
    require(&key, &[Capability::UserRoleScopeManagement])?;
    let mut state = sim.state();
    let user = find_user(&mut state.data.users, &id)?;
    user["disabled_at"] = serde_json::Value::Null;
    Ok(json_response(StatusCode::OK, user))
}
