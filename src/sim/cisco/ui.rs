//! The web UI's private session API (docs/vendor-apis.md §11), as a Rails/Devise app behaves: a session
//! cookie, a CSRF token in the `csrf-token` meta tag, a form sign-in answered by a redirect (with a
//! renewed session), and JSON calls that need the cookie and, when they change something, `X-CSRF-Token`.

use std::collections::{BTreeSet, HashMap};

use axum::{
    Form, Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
    routing::{delete, get},
};

use super::{CiscoSim, JsonError, KeyRecord, UiSessionState, json_response, random_hex, random_token};
use crate::clients::cisco::Capability;

/// Name of the session cookie.
pub(crate) const SESSION_COOKIE: &str = "_h4_session";

pub(crate) fn routes() -> Router<CiscoSim> {
    Router::new()
        .route("/", get(landing))
        .route("/h4_users/sign_in", get(sign_in_page).post(sign_in))
        .route("/api/api_credentials.json", get(list_credentials).post(create_credential))
        .route("/api/api_credentials/{file}", delete(delete_credential))
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn set_session_cookie(response: &mut Response, sid: &str) {
    let cookie = format!("{SESSION_COOKIE}={sid}; path=/; secure; HttpOnly; SameSite=Lax");
    response.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("hex is a valid cookie"));
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

fn redirect(location: &'static str) -> Response {
    let mut response = html(
        StatusCode::FOUND,
        format!("<html><body>You are being <a href=\"{location}\">redirected</a>.</body></html>"),
    );
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_static(location));
    response
}

fn page(title: &str, csrf_token: &str, content: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<title>{title} | Cisco Secure Workload</title>\n\
         <meta name=\"csrf-param\" content=\"authenticity_token\" />\n\
         <meta name=\"csrf-token\" content=\"{csrf_token}\" />\n</head>\n<body>\n{content}\n</body>\n</html>\n"
    )
}

fn sign_in_form(csrf_token: &str, flash: &str) -> String {
    page(
        "Sign in",
        csrf_token,
        &format!(
            "{flash}<form class=\"new_h4_user\" action=\"/h4_users/sign_in\" accept-charset=\"UTF-8\" method=\"post\">\
             <input type=\"hidden\" name=\"authenticity_token\" value=\"{csrf_token}\" />\
             <input type=\"email\" name=\"h4_user[email]\" /><input type=\"password\" name=\"h4_user[password]\" />\
             <input type=\"submit\" name=\"commit\" value=\"Sign in\" /></form>"
        ),
    )
}

/// A fresh session; returns its id and token.
fn new_session(sim: &CiscoSim, user: Option<String>) -> (String, String) {
    let (sid, token) = (random_hex(16), random_token());
    let mut state = sim.state();
    state.issued_ui_secrets.extend([sid.clone(), token.clone()]);
    state.sessions.insert(sid.clone(), UiSessionState { csrf_token: token.clone(), user });
    (sid, token)
}

async fn sign_in_page(State(sim): State<CiscoSim>, headers: HeaderMap) -> Response {
    let existing =
        session_id(&headers).and_then(|sid| sim.state().sessions.get(&sid).map(|s| (sid, s.csrf_token.clone())));
    let (sid, token) = existing.unwrap_or_else(|| new_session(&sim, None));
    let mut response = html(StatusCode::OK, sign_in_form(&token, ""));
    set_session_cookie(&mut response, &sid);
    response
}

async fn sign_in(
    State(sim): State<CiscoSim>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let Some(sid) = session_id(&headers) else {
        return html(StatusCode::UNPROCESSABLE_ENTITY, page("Error", "", "ActionController::InvalidAuthenticityToken"));
    };
    let mut state = sim.state();
    let Some(session) = state.sessions.get(&sid).cloned() else {
        return html(StatusCode::UNPROCESSABLE_ENTITY, page("Error", "", "ActionController::InvalidAuthenticityToken"));
    };
    if field("authenticity_token") != session.csrf_token {
        return html(StatusCode::UNPROCESSABLE_ENTITY, page("Error", "", "ActionController::InvalidAuthenticityToken"));
    }
    let user = &state.ui_user;
    if !field("h4_user[email]").eq_ignore_ascii_case(&user.email)
        || field("h4_user[password]") != user.password.expose()
    {
        drop(state);
        let mut response = html(
            StatusCode::UNAUTHORIZED,
            sign_in_form(&session.csrf_token, "<p class=\"alert\">Invalid Email or password.</p>"),
        );
        set_session_cookie(&mut response, &sid);
        return response;
    }
    // Devise renews the session on sign-in (no fixation); the old id and token stop working.
    let email = user.email.clone();
    state.sessions.remove(&sid);
    drop(state);
    let (new_sid, _) = new_session(&sim, Some(email));
    let mut response = redirect("/");
    set_session_cookie(&mut response, &new_sid);
    response
}

/// The signed-in session, or `None`.
fn signed_in(sim: &CiscoSim, headers: &HeaderMap) -> Option<(String, UiSessionState)> {
    let sid = session_id(headers)?;
    let session = sim.state().sessions.get(&sid).cloned()?;
    session.user.is_some().then_some((sid, session))
}

async fn landing(State(sim): State<CiscoSim>, headers: HeaderMap) -> Response {
    match signed_in(&sim, &headers) {
        Some((_, session)) => html(StatusCode::OK, page("Dashboard", &session.csrf_token, "<div id=\"app\"></div>")),
        None => redirect("/h4_users/sign_in"),
    }
}

/// The session for a JSON call; `write` calls also need the session's token in `X-CSRF-Token`.
fn json_session(sim: &CiscoSim, headers: &HeaderMap, write: bool) -> Result<UiSessionState, JsonError> {
    let Some((_, session)) = signed_in(sim, headers) else {
        return Err(JsonError::new(StatusCode::UNAUTHORIZED, "You need to sign in or sign up before continuing."));
    };
    let token = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if write && token != session.csrf_token {
        return Err(JsonError::new(StatusCode::UNPROCESSABLE_ENTITY, "Can't verify CSRF token authenticity."));
    }
    Ok(session)
}

fn listed(key: &KeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "api_key": key.api_key,
        "description": key.description,
        "capability_names": key.capabilities.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "created_at": key.created_at,
    })
}

async fn list_credentials(State(sim): State<CiscoSim>, headers: HeaderMap) -> Result<Response, JsonError> {
    let session = json_session(&sim, &headers, false)?;
    let user = session.user.unwrap_or_default();
    let keys: Vec<_> = sim.state().keys.iter().filter(|k| !k.revoked && k.created_by == user).map(listed).collect();
    Ok(json_response(StatusCode::OK, &serde_json::Value::Array(keys)))
}

/// `capability_names` as the UI sends it (one comma-separated string); a JSON list is accepted too.
fn parse_capability_names(value: Option<&serde_json::Value>) -> Result<BTreeSet<Capability>, String> {
    let names: Vec<String> = match value {
        Some(serde_json::Value::String(s)) => {
            s.split(',').map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect()
        }
        Some(serde_json::Value::Array(a)) => a.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect(),
        _ => vec![],
    };
    if names.is_empty() {
        return Err("Capability names can't be blank".to_owned());
    }
    names.iter().map(|n| n.parse::<Capability>().map_err(|_| format!("Unknown capability: {n}"))).collect()
}

async fn create_credential(
    State(sim): State<CiscoSim>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, JsonError> {
    let session = json_session(&sim, &headers, true)?;
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Err(JsonError::new(StatusCode::BAD_REQUEST, "Request body must be a JSON object"));
    };
    let capabilities = parse_capability_names(fields.get("capability_names"))
        .map_err(|message| JsonError::new(StatusCode::UNPROCESSABLE_ENTITY, message))?;
    let description = fields.get("description").and_then(|v| v.as_str()).unwrap_or_default();
    let record = sim.state().mint_key(description, capabilities, &session.user.unwrap_or_default());
    let mut answer = listed(&record);
    answer["api_secret"] = record.api_secret.expose().into();
    Ok(json_response(StatusCode::OK, &answer))
}

async fn delete_credential(
    State(sim): State<CiscoSim>,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Result<Response, JsonError> {
    let session = json_session(&sim, &headers, true)?;
    let Some(id) = file.strip_suffix(".json") else {
        return Err(JsonError::new(StatusCode::NOT_FOUND, "Not found"));
    };
    let user = session.user.unwrap_or_default();
    let mut state = sim.state();
    let before = state.keys.len();
    state.keys.retain(|k| !(k.id == id && k.created_by == user && !k.revoked));
    if state.keys.len() == before {
        return Err(JsonError::new(StatusCode::NOT_FOUND, "Not found"));
    }
    Ok(json_response(StatusCode::OK, &serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_parse_from_the_ui_string_or_a_list() {
        let parsed =
            parse_capability_names(Some(&serde_json::json!("sensor_management, flow_inventory_query"))).unwrap();
        assert_eq!(parsed, [Capability::SensorManagement, Capability::FlowInventoryQuery].into_iter().collect());
        let parsed = parse_capability_names(Some(&serde_json::json!(["hw_sensor_management"]))).unwrap();
        assert_eq!(parsed, [Capability::HwSensorManagement].into_iter().collect());
        assert_eq!(parse_capability_names(Some(&serde_json::json!("root"))).unwrap_err(), "Unknown capability: root");
        assert!(parse_capability_names(Some(&serde_json::json!(""))).is_err());
        assert!(parse_capability_names(None).is_err());
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; _h4_session=abc; b=2"));
        assert_eq!(session_id(&headers).as_deref(), Some("abc"));
        assert_eq!(session_id(&HeaderMap::new()), None);
    }
}
