//! Whether a Secure Workload endpoint answers at all: an unsigned read of the OpenAPI, whose refusal (HTTP 401)
//! proves the host, its TLS certificate and the API are there. Used to check a provider that holds no credential.

use std::time::Duration;

use super::client::{OPENAPI_PREFIX, host_root};
use crate::clients::{TlsOptions, VendorError, classify_transport_error, http_client};

/// Any HTTP answer from `GET <root>/openapi/v1/app_scopes` without a signature; transport and TLS failures are
/// errors. The body is never read.
pub async fn reachable(endpoint: &str, tls: &TlsOptions, timeout: Duration) -> Result<u16, VendorError> {
    let op = "Secure Workload reachability";
    let url = host_root(endpoint)?
        .join(&format!("{}/app_scopes", OPENAPI_PREFIX.trim_start_matches('/')))
        .map_err(|e| VendorError::new(crate::clients::ErrorKind::Invalid, op, None, format!("bad URL: {e}")))?;
    let http = http_client(tls, timeout)?;
    let answer = http.get(url).send().await.map_err(|e| classify_transport_error(op, &e))?;
    Ok(answer.status().as_u16())
}
