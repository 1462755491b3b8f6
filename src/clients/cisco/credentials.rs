//! The API key pair and its `credentials.json` form (what tetpyclient's `credentials_file` reads,
//! docs/vendor-apis.md §7).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::clients::SecretString;

/// A Secure Workload API key and secret. `Debug` shows only the key's fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiCredentials {
    api_key: String,
    api_secret: SecretString,
}

/// Why a key pair or a `credentials.json` was refused. Never carries the values themselves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("credentials.json is not valid JSON ({category} at line {line}, column {column})")]
    NotJson { category: &'static str, line: usize, column: usize },
    #[error("credentials.json must hold a JSON object with \"api_key\" and \"api_secret\"")]
    NotAnObject,
    #[error("credentials.json has no \"{0}\" field")]
    MissingField(&'static str),
    #[error("\"{0}\" in credentials.json must be a string")]
    NotAString(&'static str),
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{0} must be printable ASCII without spaces (the vendor issues hex strings)")]
    NotPrintableAscii(&'static str),
}

impl ApiCredentials {
    /// Validates and builds a pair. Surrounding whitespace (a trailing newline from a file) is dropped;
    /// the vendor issues hex strings, so nothing meaningful is lost.
    pub fn new(api_key: impl AsRef<str>, api_secret: SecretString) -> Result<Self, CredentialsError> {
        let api_key = checked("api_key", api_key.as_ref())?.to_owned();
        let api_secret = SecretString::new(checked("api_secret", api_secret.expose())?);
        Ok(Self { api_key, api_secret })
    }

    /// Parses `{"api_key": "...", "api_secret": "..."}`; other fields are ignored, as tetpyclient does.
    pub fn from_credentials_json(bytes: &[u8]) -> Result<Self, CredentialsError> {
        // Parse to a Value first: serde's typed errors can quote the offending value, syntax errors do not.
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| CredentialsError::NotJson {
            category: match e.classify() {
                serde_json::error::Category::Eof => "unexpected end of input",
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Data => "unexpected data",
                serde_json::error::Category::Io => "read error",
            },
            line: e.line(),
            column: e.column(),
        })?;
        let object = value.as_object().ok_or(CredentialsError::NotAnObject)?;
        let field = |name: &'static str| -> Result<&str, CredentialsError> {
            object
                .get(name)
                .ok_or(CredentialsError::MissingField(name))?
                .as_str()
                .ok_or(CredentialsError::NotAString(name))
        };
        Self::new(field("api_key")?, SecretString::new(field("api_secret")?))
    }

    /// The `credentials.json` document: `{"api_key": ..., "api_secret": ...}`. Contains the secret:
    /// the result goes into a Kubernetes Secret and nowhere else.
    pub fn to_credentials_json(&self) -> SecretString {
        let doc = serde_json::json!({ "api_key": self.api_key, "api_secret": self.api_secret.expose() });
        SecretString::new(serde_json::to_string_pretty(&doc).expect("a JSON object serialises"))
    }

    /// The key (the `Id` header). Not a secret by itself, but we still keep it out of status and logs.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    pub fn api_secret(&self) -> &SecretString {
        &self.api_secret
    }

    /// A short, stable identifier of the key for status and logs: `sha256:` and 16 hex digits of the key's hash.
    pub fn key_fingerprint(&self) -> String {
        key_fingerprint(&self.api_key)
    }
}

/// [`ApiCredentials::key_fingerprint`] for a bare key.
pub fn key_fingerprint(api_key: &str) -> String {
    let digest = hex::encode(Sha256::digest(api_key.as_bytes()));
    format!("sha256:{}", &digest[..16])
}

fn checked<'a>(what: &'static str, value: &'a str) -> Result<&'a str, CredentialsError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CredentialsError::Empty(what));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CredentialsError::NotPrintableAscii(what));
    }
    Ok(value)
}

impl fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiCredentials")
            .field("api_key", &self.key_fingerprint())
            .field("api_secret", &self.api_secret)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";
    const SECRET: &str = "fedcba9876543210fedcba9876543210deadbeef";

    #[test]
    fn parses_and_emits_credentials_json() {
        let text = format!(r#"{{"api_key": "{KEY}", "api_secret": "{SECRET}", "extra": 1}}"#);
        let creds = ApiCredentials::from_credentials_json(text.as_bytes()).unwrap();
        assert_eq!(creds.api_key(), KEY);
        assert_eq!(creds.api_secret().expose(), SECRET);
        let emitted = creds.to_credentials_json();
        let back: serde_json::Value = serde_json::from_str(emitted.expose()).unwrap();
        assert_eq!(back, serde_json::json!({"api_key": KEY, "api_secret": SECRET}));
        assert_eq!(ApiCredentials::from_credentials_json(emitted.expose().as_bytes()).unwrap(), creds);
    }

    #[test]
    fn malformed_input_gives_clear_errors_without_the_secret() {
        let cases: Vec<(String, CredentialsError)> = vec![
            (
                format!(r#"{{"api_key": "{KEY}", "api_secret": "{SECRET}""#),
                CredentialsError::NotJson { category: "unexpected end of input", line: 1, column: 85 },
            ),
            (format!(r#"["{SECRET}"]"#), CredentialsError::NotAnObject),
            (format!(r#"{{"api_secret": "{SECRET}"}}"#), CredentialsError::MissingField("api_key")),
            (format!(r#"{{"api_key": "{KEY}"}}"#), CredentialsError::MissingField("api_secret")),
            (format!(r#"{{"api_key": "{KEY}", "api_secret": 42}}"#), CredentialsError::NotAString("api_secret")),
            (format!(r#"{{"api_key": "", "api_secret": "{SECRET}"}}"#), CredentialsError::Empty("api_key")),
            (
                format!(r#"{{"api_key": "{KEY}", "api_secret": "{SECRET} x"}}"#),
                CredentialsError::NotPrintableAscii("api_secret"),
            ),
        ];
        for (input, expected) in cases {
            let err = ApiCredentials::from_credentials_json(input.as_bytes()).unwrap_err();
            if let CredentialsError::NotJson { .. } = expected {
                assert!(matches!(err, CredentialsError::NotJson { .. }), "{err:?}");
            } else {
                assert_eq!(err, expected);
            }
            let text = format!("{err} {err:?}");
            assert!(!text.contains(SECRET), "error text leaks the secret: {text}");
        }
        // serde_json's typed errors would quote the value; ours must not.
        let err = ApiCredentials::from_credentials_json(format!(r#"{{"api_key": {{"v": "{SECRET}"}}}}"#).as_bytes())
            .unwrap_err();
        assert!(!err.to_string().contains(SECRET));
    }

    #[test]
    fn surrounding_whitespace_is_dropped() {
        let creds = ApiCredentials::new(format!("{KEY}\n"), SecretString::new(format!(" {SECRET}\n"))).unwrap();
        assert_eq!(creds.api_key(), KEY);
        assert_eq!(creds.api_secret().expose(), SECRET);
    }

    #[test]
    fn debug_shows_neither_key_nor_secret() {
        let creds = ApiCredentials::new(KEY, SecretString::new(SECRET)).unwrap();
        let text = format!("{creds:?}");
        assert!(!text.contains(KEY) && !text.contains(SECRET), "{text}");
        assert!(text.contains(&creds.key_fingerprint()));
        assert!(creds.key_fingerprint().starts_with("sha256:") && creds.key_fingerprint().len() == 23);
    }
}
