//! What the three Trend APIs (Deep Security `/api`, Cloud One, Vision One) share on the wire: JSON bodies whose
//! decoding errors never echo content, `{"message": ...}` error bodies, the default request timeout.

use std::time::Duration;

use serde::{Deserialize, de::DeserializeOwned};

use crate::clients::{ErrorKind, VendorError};

/// Timeout of one request unless the client is given another (the operator always gives its vendor timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses a 2xx body. The error text names only the position, never the content (it may hold a secret).
pub(super) fn decode<T: DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, VendorError> {
    serde_json::from_slice(body).map_err(|e| {
        VendorError::new(
            ErrorKind::Invalid,
            operation,
            None,
            format!("unexpected response body ({:?} error at line {} column {})", e.classify(), e.line(), e.column()),
        )
    })
}

/// The `message` of a `{"message": ...}` body (or the legacy `{"error": {"message": ...}}`), else the trimmed text.
pub(super) fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        message: Option<String>,
        error: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
    }
    if let Ok(parsed) = serde_json::from_slice::<Body>(body)
        && let Some(message) = parsed.message.or_else(|| parsed.error.and_then(|e| e.message))
    {
        return message.trim().to_owned();
    }
    String::from_utf8_lossy(body).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_prefers_the_json_message() {
        assert_eq!(error_message(br#"{"message": "The API key does not exist."}"#), "The API key does not exist.");
        assert_eq!(error_message(br#"{"error": {"message": "Bad credentials"}}"#), "Bad credentials");
        assert_eq!(error_message(b"  <html>Service Unavailable</html>\n"), "<html>Service Unavailable</html>");
        assert_eq!(error_message(br#"{"other": 1}"#), r#"{"other": 1}"#);
        assert_eq!(error_message(b""), "");
    }

    #[test]
    fn decode_errors_do_not_echo_the_body() {
        let err = decode::<super::super::model::IssuedApiKeyWire>(
            "create API key",
            br#"{"ID": "x", "secretKey": "1:topsecret"}"#,
        )
        .err()
        .expect("ID must be a number");
        assert_eq!(err.kind, ErrorKind::Invalid);
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }
}
