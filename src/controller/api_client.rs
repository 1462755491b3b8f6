//! The operator's Kubernetes client: every watch and request multiplexed over one HTTP/2 connection to the API
//! server (ALPN `h2`), as client-go does, instead of one HTTP/1.1 connection per open watch and per concurrent
//! request. HTTP/2 keep-alive pings find a dead connection (an API server gone without a FIN) within
//! [`KEEP_ALIVE_INTERVAL`] + [`KEEP_ALIVE_TIMEOUT`]; every watch then errors and is restarted by its reflector
//! on a new connection. A server that does not offer `h2` gets HTTP/1.1, as before.
//!
//! The API server serves at most 250 streams on one connection (Go's default for `--http2-max-streams-per-connection`)
//! and a watch holds its stream for as long as it runs: a scope whose watches would take more than
//! [`MOST_WATCH_STREAMS`] of them (more than 24 watched namespaces) stays on HTTP/1.1, so that requests never queue
//! behind watches for a stream.
//!
//! The operator never upgrades a connection (no exec, attach or port-forward), so nothing needs HTTP/1.1. A proxy
//! (`HTTPS_PROXY` in the kubeconfig's `proxy-url`) goes through kube's own stack, which tunnels it over HTTP/1.1.

use std::time::Duration;

use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use kube::{
    Client, Config,
    client::{Body, ConfigExt},
};
use tower::{BoxError, ServiceBuilder, ServiceExt as _};

/// How often an HTTP/2 connection is pinged, also while idle (watches can be silent for minutes).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// At most this many of a connection's 250 streams go to watches; the rest (50) serve requests, three times the
/// default 16 concurrent reconciles.
pub const MOST_WATCH_STREAMS: usize = 200;

/// Whether the operator speaks HTTP/2 to the API server (when it offers `h2`), with `watches` watches open.
pub fn multiplexed(config: &Config, watches: usize) -> bool {
    config.proxy_url.is_none() && watches <= MOST_WATCH_STREAMS
}

/// The operator's client for `config`, which keeps `watches` watches open: HTTP/2 when [`multiplexed`] (see the
/// module doc), else kube's own HTTP/1.1 stack.
pub fn client(config: Config, watches: usize) -> Result<Client, kube::Error> {
    if !multiplexed(&config, watches) {
        tracing::info!(
            watches,
            "HTTP/1.1 to the API server (a proxy, or more watches than one HTTP/2 connection serves)"
        );
        return Client::try_from(config);
    }
    let tls = config.rustls_client_config()?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(e)))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let https = builder.enable_all_versions().wrap_connector(http);
    let http_client: HttpClient<_, Body> = HttpClient::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .service(http_client.map_err(BoxError::from));
    Ok(Client::new(service, config.default_namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Scope;

    #[test]
    fn multiplexed_unless_a_proxy_or_too_many_watches() {
        let config = Config::new("https://127.0.0.1:6443".parse().unwrap());
        assert!(multiplexed(&config, Scope::AllNamespaces.watches()));
        let namespaces = |n: usize| Scope::Namespaces((0..n).map(|i| format!("team-{i}")).collect());
        assert!(multiplexed(&config, namespaces(24).watches()));
        assert!(!multiplexed(&config, namespaces(25).watches()), "8 watches x 25 + 4 > 200");
        let mut proxied = config;
        proxied.proxy_url = Some("http://proxy:3128".parse().unwrap());
        assert!(!multiplexed(&proxied, Scope::AllNamespaces.watches()));
    }
}
