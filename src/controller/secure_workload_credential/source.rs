//! The SecureWorkloadCredential's Secrets: how a source Secret is read (the UI's download or the two keys) and
//! what the published Secret holds. Pure; the values go into Secrets and nowhere else.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use crate::{
    clients::{SecretString, cisco::ApiCredentials},
    controller::secret::template::{SecretContent, Vars},
};

/// Keys of the published Secret. `credentials.json` is exactly what tetpyclient's `credentials_file` reads.
pub const CREDENTIALS_JSON: &str = "credentials.json";
pub const API_KEY: &str = "api_key";
pub const API_SECRET: &str = "api_secret";
pub const ENDPOINT: &str = "endpoint";
pub const CA_CRT: &str = "ca.crt";
/// Keys under which a source Secret may hold the file the UI downloads (third-party tools call it
/// `api_credentials.json`, docs/vendor-apis.md §7).
pub const CREDENTIALS_FILE_KEYS: [&str; 2] = [CREDENTIALS_JSON, "api_credentials.json"];

/// Reads a pair from a Secret's data: `credentials.json` (or `api_credentials.json`) as the UI downloads it, else
/// `api_key` + `api_secret`. The error names the problem, never a value.
pub fn credentials_from_data(data: &BTreeMap<String, ByteString>) -> Result<ApiCredentials, String> {
    if let Some((key, file)) = CREDENTIALS_FILE_KEYS.iter().find_map(|k| data.get(*k).map(|v| (*k, v))) {
        return ApiCredentials::from_credentials_json(&file.0).map_err(|e| format!("{key}: {e}"));
    }
    let text = |key: &'static str| -> Result<String, String> {
        let bytes = data.get(key).ok_or_else(|| {
            format!("has neither {CREDENTIALS_JSON} nor the keys {API_KEY} and {API_SECRET} (missing {key:?})")
        })?;
        String::from_utf8(bytes.0.clone()).map_err(|_| format!("key {key:?} is not UTF-8"))
    };
    let key = text(API_KEY)?;
    let secret = SecretString::new(text(API_SECRET)?);
    ApiCredentials::new(key, secret).map_err(|e| e.to_string())
}

/// What the published Secret holds: its default keys, and the variables of `spec.secret.template`
/// ([`crate::controller::secret::template::SECURE_WORKLOAD_CREDENTIAL_VARS`]). Holds the secret: it goes into the Secret and nowhere else.
pub fn secret_data(pair: &ApiCredentials, endpoint: &str, ca_pem: Option<&str>) -> SecretContent {
    let credentials_json = pair.to_credentials_json();
    let vars = Vars::default()
        .plain("key", pair.api_key())
        .secret("secret", pair.api_secret().clone())
        .plain("endpoint", endpoint)
        .secret("credentialsJson", credentials_json.clone());
    let mut data = BTreeMap::from([
        (CREDENTIALS_JSON.to_owned(), credentials_json.expose().as_bytes().to_vec()),
        (API_KEY.to_owned(), pair.api_key().as_bytes().to_vec()),
        (API_SECRET.to_owned(), pair.api_secret().expose().as_bytes().to_vec()),
        (ENDPOINT.to_owned(), endpoint.as_bytes().to_vec()),
    ]);
    if let Some(ca) = ca_pem {
        // One trailing newline, however the CA was given (a Secret value is read trimmed).
        data.insert(CA_CRT.to_owned(), format!("{}\n", ca.trim_end()).into_bytes());
    }
    SecretContent { data, vars }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";
    const SECRET: &str = "fedcba9876543210fedcba9876543210deadbeef";

    #[test]
    fn source_is_read_from_the_two_keys_or_the_downloaded_file() {
        let pair = credentials_from_data(&data(&[(API_KEY, KEY), (API_SECRET, &format!("{SECRET}\n"))])).unwrap();
        assert_eq!((pair.api_key(), pair.api_secret().expose()), (KEY, SECRET));
        let file = format!(r#"{{"api_key": "{KEY}", "api_secret": "{SECRET}"}}"#);
        for name in CREDENTIALS_FILE_KEYS {
            let pair = credentials_from_data(&data(&[(name, &file)])).unwrap();
            assert_eq!((pair.api_key(), pair.api_secret().expose()), (KEY, SECRET));
        }
    }

    #[test]
    fn source_problems_are_named_without_values() {
        let cases = [
            (data(&[(API_KEY, KEY)]), "missing \"api_secret\""),
            (data(&[]), "has neither credentials.json"),
            (
                data(&[(CREDENTIALS_JSON, &format!(r#"{{"api_key": "{KEY}", "api_secret": "{SECRET}""#))]),
                "not valid JSON",
            ),
            (
                data(&[(CREDENTIALS_JSON, &format!(r#"{{"api_key": "{KEY}", "secret": "{SECRET}"}}"#))]),
                "no \"api_secret\"",
            ),
            (data(&[(API_KEY, KEY), (API_SECRET, "has space")]), "printable ASCII"),
        ];
        for (input, expected) in cases {
            let problem = credentials_from_data(&input).unwrap_err();
            assert!(problem.contains(expected), "{problem:?} should contain {expected:?}");
            assert!(!problem.contains(SECRET) && !problem.contains(KEY), "{problem}");
        }
        let not_utf8 = BTreeMap::from([
            (API_KEY.to_owned(), ByteString(KEY.into())),
            (API_SECRET.to_owned(), ByteString(vec![0xff, 0xfe])),
        ]);
        assert!(credentials_from_data(&not_utf8).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn published_secret_is_what_tetpyclient_reads() {
        let pair = ApiCredentials::new(KEY, SecretString::new(SECRET)).unwrap();
        let d = secret_data(&pair, "https://sw.example.com", None).data;
        let doc: serde_json::Value = serde_json::from_slice(&d[CREDENTIALS_JSON]).unwrap();
        assert_eq!(doc, serde_json::json!({"api_key": KEY, "api_secret": SECRET}));
        assert_eq!(d[API_KEY], KEY.as_bytes());
        assert_eq!(d[API_SECRET], SECRET.as_bytes());
        assert_eq!(d[ENDPOINT], b"https://sw.example.com");
        assert!(!d.contains_key(CA_CRT), "ca.crt only when a CA is configured");
        for ca in ["-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\n\n"] {
            let with_ca = secret_data(&pair, "https://sw.example.com", Some(ca)).data;
            assert_eq!(with_ca[CA_CRT], b"-----BEGIN CERTIFICATE-----\n");
        }
    }
}
