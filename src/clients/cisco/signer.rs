//! Request signing exactly as tetpyclient 1.0.8 does it (docs/vendor-apis.md §6).
//!
//! Pure functions: the caller passes the time, so the vectors of docs/vendor-apis.md §6.4 are reproducible and the
//! simulator verifies with the very same code.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::clients::SecretString;

/// `User-Agent` tetpyclient sends; it is not signed, but we send the same so the server sees one client shape.
pub const USER_AGENT: &str = "Cisco Tetration Python client";
/// The only content type of JSON calls; signed even on GET without a body.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// `Timestamp` layout: UTC, whole seconds, a literal `+0000`.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S+0000";

pub const HEADER_ID: &str = "Id";
pub const HEADER_TIMESTAMP: &str = "Timestamp";
pub const HEADER_CHECKSUM: &str = "X-Tetration-Cksum";
pub const HEADER_AUTHORIZATION: &str = "Authorization";

/// One request as it goes on the wire, the parts that are signed.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    /// Upper-case HTTP method.
    pub method: &'a str,
    /// The request-target: path plus `?query` when there is one, byte for byte as sent.
    pub path_and_query: &'a str,
    /// The `Content-Type` header sent, if any (tetpyclient sends `application/json` on every JSON call).
    pub content_type: Option<&'a str>,
    /// The exact body bytes sent (empty when none).
    pub body: &'a [u8],
}

/// The headers that authenticate one request.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub id: String,
    pub timestamp: String,
    /// `X-Tetration-Cksum`, present only for POST, PUT and DELETE with a non-empty body.
    pub checksum: Option<String>,
    /// Bare base64 HMAC-SHA256, no scheme word.
    pub authorization: String,
}

impl SignedHeaders {
    /// The headers to add, as (name, value) pairs; `Content-Type` and `User-Agent` are the caller's.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![(HEADER_ID, self.id.as_str()), (HEADER_TIMESTAMP, self.timestamp.as_str())];
        if let Some(cksum) = &self.checksum {
            out.push((HEADER_CHECKSUM, cksum.as_str()));
        }
        out.push((HEADER_AUTHORIZATION, self.authorization.as_str()));
        out
    }
}

// A signature is replayable for minutes, so it stays out of logs like the secret it is made from.
impl fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedHeaders")
            .field("id", &"[redacted]")
            .field("timestamp", &self.timestamp)
            .field("checksum", &self.checksum)
            .field("authorization", &"[redacted]")
            .finish()
    }
}

/// Lower-case hex SHA-256 of the body bytes.
pub fn body_checksum(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The `X-Tetration-Cksum` value tetpyclient sends: only for POST, PUT, DELETE with a non-empty body
/// (never GET, never PATCH).
pub fn checksum_header(method: &str, body: &[u8]) -> Option<String> {
    (!body.is_empty() && matches!(method, "POST" | "PUT" | "DELETE")).then(|| body_checksum(body))
}

/// `Timestamp` header value for the given instant.
pub fn format_timestamp(at: jiff::Timestamp) -> String {
    at.strftime(TIMESTAMP_FORMAT).to_string()
}

/// The five signed lines, each followed by `\n`; an absent header gives an empty line.
pub fn string_to_sign(
    method: &str,
    path_and_query: &str,
    checksum: &str,
    content_type: &str,
    timestamp: &str,
) -> String {
    format!("{method}\n{path_and_query}\n{checksum}\n{content_type}\n{timestamp}\n")
}

/// `Authorization` value: standard base64 (padded) of HMAC-SHA256 keyed with the secret's ASCII bytes
/// (used as-is, not hex-decoded).
pub fn signature(secret: &SecretString, string_to_sign: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(secret, string_to_sign).finalize().into_bytes())
}

/// Constant-time check of an `Authorization` value against the expected signature.
pub fn signature_matches(secret: &SecretString, string_to_sign: &str, authorization: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(authorization.trim()) else {
        return false;
    };
    mac(secret, string_to_sign).verify_slice(&given).is_ok()
}

fn mac(secret: &SecretString, string_to_sign: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    mac
}

/// Signs one request at `now` with the key pair.
pub fn sign(api_key: &str, secret: &SecretString, request: &RequestToSign<'_>, now: jiff::Timestamp) -> SignedHeaders {
    let checksum = checksum_header(request.method, request.body);
    let timestamp = format_timestamp(now);
    let message = string_to_sign(
        request.method,
        request.path_and_query,
        checksum.as_deref().unwrap_or(""),
        request.content_type.unwrap_or(""),
        &timestamp,
    );
    SignedHeaders { id: api_key.to_owned(), timestamp, checksum, authorization: signature(secret, &message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // docs/vendor-apis.md §6.4: key 32×X, secret 40×X, clock frozen at 2020-04-21T18:23:37Z.
    fn key() -> String {
        "X".repeat(32)
    }
    fn secret() -> SecretString {
        SecretString::new("X".repeat(40))
    }
    fn frozen() -> jiff::Timestamp {
        "2020-04-21T18:23:37Z".parse().unwrap()
    }
    fn json_call<'a>(method: &'a str, target: &'a str, body: &'a [u8]) -> RequestToSign<'a> {
        RequestToSign { method, path_and_query: target, content_type: Some(JSON_CONTENT_TYPE), body }
    }

    #[test]
    fn timestamp_has_whole_seconds_and_literal_offset() {
        assert_eq!(format_timestamp(frozen()), "2020-04-21T18:23:37+0000");
        let with_fraction: jiff::Timestamp = "2020-04-21T18:23:37.987654Z".parse().unwrap();
        assert_eq!(format_timestamp(with_fraction), "2020-04-21T18:23:37+0000");
    }

    #[test]
    fn tf_sw_vector_get_app_scopes() {
        let signed = sign(&key(), &secret(), &json_call("GET", "/openapi/v1/app_scopes", b""), frozen());
        assert_eq!(signed.authorization, "uTixNCblmmldnLBADYcuzfxU/LHy3a2RM3jLrQwxFtc=");
        assert_eq!(signed.checksum, None);
        assert_eq!(signed.timestamp, "2020-04-21T18:23:37+0000");
        assert_eq!(signed.id, key());
    }

    #[test]
    fn frozen_clock_get_with_query() {
        let signed =
            sign(&key(), &secret(), &json_call("GET", "/openapi/v1/users?include_disabled=true", b""), frozen());
        assert_eq!(signed.authorization, "4biFxJiH0li+HNxRHi5ZbxVvKBig0n8ip8W96Uys0ew=");
    }

    #[test]
    fn frozen_clock_post_with_body() {
        let body = br#"{"email":"a@b.c","first_name":"A","last_name":"B"}"#;
        let signed = sign(&key(), &secret(), &json_call("POST", "/openapi/v1/users", body), frozen());
        assert_eq!(
            signed.checksum.as_deref(),
            Some("05a4a573518ea2be16d8d898378568bcd87d91ae14fc73aa371ec713ff266798")
        );
        assert_eq!(signed.authorization, "2CGUOwbQ/vhtOjKMLwB9KcR51lJ6oxrZHguV2v3ABHo=");
    }

    #[test]
    fn frozen_clock_delete_without_body() {
        let signed =
            sign(&key(), &secret(), &json_call("DELETE", "/openapi/v1/users/5ce480db497d4f1ca1fc2b2b", b""), frozen());
        assert_eq!(signed.checksum, None, "no checksum for an empty body");
        assert_eq!(signed.authorization, "/ET9BbebgdBDXMkrl2EmvWhFQg89o2cwSSInMFX5cCc=");
    }

    #[test]
    fn empty_body_checksum() {
        assert_eq!(body_checksum(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn tf_sw_checksum_covers_exact_bytes_including_trailing_newline() {
        // Go's json.Encoder appends '\n'; the checksum covers exactly the bytes sent.
        let body = b"{\"Name\":\"Alice\",\"Body\":\"Hello\",\"Time\":1294706395881547000}\n";
        assert_eq!(body_checksum(body), "aa38a6462c07c34671ece67fe7933d7e1d77a9540027d92512daf0a59f6d430b");
        assert_eq!(checksum_header("POST", body).as_deref(), Some(body_checksum(body).as_str()));
    }

    #[test]
    fn checksum_only_for_post_put_delete_with_body() {
        assert!(checksum_header("POST", b"{}").is_some());
        assert!(checksum_header("PUT", b"{}").is_some());
        assert!(checksum_header("DELETE", b"{}").is_some());
        assert!(checksum_header("PATCH", b"{}").is_none(), "tetpyclient never sums PATCH");
        assert!(checksum_header("GET", b"{}").is_none());
        assert!(checksum_header("POST", b"").is_none());
    }

    #[test]
    fn absent_content_type_signs_an_empty_line() {
        let msg = string_to_sign("GET", "/openapi/v1/x", "", "", "2020-04-21T18:23:37+0000");
        assert_eq!(msg, "GET\n/openapi/v1/x\n\n\n2020-04-21T18:23:37+0000\n");
    }

    #[test]
    fn verification_accepts_own_signature_and_rejects_others() {
        let msg = string_to_sign("GET", "/openapi/v1/app_scopes", "", JSON_CONTENT_TYPE, "2020-04-21T18:23:37+0000");
        assert!(signature_matches(&secret(), &msg, "uTixNCblmmldnLBADYcuzfxU/LHy3a2RM3jLrQwxFtc="));
        assert!(!signature_matches(
            &SecretString::new("Y".repeat(40)),
            &msg,
            "uTixNCblmmldnLBADYcuzfxU/LHy3a2RM3jLrQwxFtc="
        ));
        assert!(!signature_matches(&secret(), &msg, "not base64!"));
    }

    #[test]
    fn debug_redacts_signature() {
        let signed = sign(&key(), &secret(), &json_call("GET", "/openapi/v1/app_scopes", b""), frozen());
        let text = format!("{signed:?}");
        assert!(!text.contains("uTixNCbl"));
        assert!(!text.contains(&key()));
    }
}
