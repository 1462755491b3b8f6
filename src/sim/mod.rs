//! Vendor simulators (feature `sim`): Trend Micro Workload Security and Cisco Secure Workload over HTTPS on
//! loopback, with a plain-HTTP control port for fault injection, key revocation and request counts.
//! Used by the tests, the demo and the `vendor-sim` binary; never part of the operator image.

pub mod cisco;
pub mod counts;
pub mod faults;
pub mod partition;
pub mod server;
pub mod tls;
pub mod trend;

use std::{net::SocketAddr, path::PathBuf};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{delete, get, post},
};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, task::JoinHandle};

pub use cisco::{CiscoSim, CiscoSimOptions};
use counts::RequestCounts;
use faults::{FaultRule, Faults, VendorLayerState};
use partition::{Partition, Reachability};
pub use trend::{CloudOneSim, DeepSecuritySim, DeepSecuritySimOptions, VisionOneSim};

/// Where and how to run the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub trend_listen: SocketAddr,
    pub cisco_listen: SocketAddr,
    pub control_listen: SocketAddr,
    /// Where to write the CA certificate; a fresh temporary file when absent.
    pub ca_file: Option<PathBuf>,
    pub deep_security: DeepSecuritySimOptions,
    pub cisco: CiscoSimOptions,
}

impl Default for SimOptions {
    fn default() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            trend_listen: any,
            cisco_listen: any,
            control_listen: any,
            ca_file: None,
            deep_security: DeepSecuritySimOptions::default(),
            cisco: CiscoSimOptions::default(),
        }
    }
}

/// The startup contract: the first line `vendor-sim` prints on stdout, as one JSON object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartupInfo {
    /// Deep Security / Workload Security `/api` (named `trend` on the wire since the first release; scripts and
    /// the conformance tests read it): `url` (ends in `/api`), `adminApiKey`, `adminUser`, `adminPassword`.
    pub trend: serde_json::Value,
    /// `url` (host root), `apiKey`, `apiSecret`, `uiEmail`, `uiPassword`.
    pub cisco: serde_json::Value,
    /// Trend Vision One: `url` (the region host root; clients add `/v3.0`), `adminApiKey`.
    #[serde(default)]
    pub vision_one: serde_json::Value,
    /// Trend Cloud One accounts API: `url` (ends in `/api`), `adminApiKey` (`<id>:<secret>`).
    #[serde(default)]
    pub cloud_one: serde_json::Value,
    pub ca_file: PathBuf,
    pub control_url: String,
}

impl StartupInfo {
    fn str_field(v: &serde_json::Value, name: &str) -> String {
        v.get(name).and_then(|s| s.as_str()).unwrap_or_default().to_owned()
    }
    pub fn trend_url(&self) -> String {
        Self::str_field(&self.trend, "url")
    }
    pub fn trend_admin_api_key(&self) -> String {
        Self::str_field(&self.trend, "adminApiKey")
    }
    pub fn vision_one_url(&self) -> String {
        Self::str_field(&self.vision_one, "url")
    }
    pub fn vision_one_admin_api_key(&self) -> String {
        Self::str_field(&self.vision_one, "adminApiKey")
    }
    pub fn cloud_one_url(&self) -> String {
        Self::str_field(&self.cloud_one, "url")
    }
    pub fn cloud_one_admin_api_key(&self) -> String {
        Self::str_field(&self.cloud_one, "adminApiKey")
    }
    pub fn cisco_url(&self) -> String {
        Self::str_field(&self.cisco, "url")
    }
    pub fn cisco_api_key(&self) -> String {
        Self::str_field(&self.cisco, "apiKey")
    }
    pub fn cisco_api_secret(&self) -> String {
        Self::str_field(&self.cisco, "apiSecret")
    }
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.ca_file).unwrap_or_default()
    }
}

/// A running simulator. Dropping it stops the servers.
pub struct RunningSim {
    pub info: StartupInfo,
    pub deep_security: DeepSecuritySim,
    pub vision_one: VisionOneSim,
    pub cloud_one: CloudOneSim,
    pub cisco: CiscoSim,
    pub faults: Faults,
    pub counts: RequestCounts,
    /// Connection-level partitions of each vendor listener (`trend`, `cisco`).
    pub partitions: Partitions,
    pub ca_pem: String,
    tasks: Vec<JoinHandle<()>>,
    _ca_tempdir: Option<TempDir>,
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The partition state of each vendor listener.
#[derive(Debug, Clone, Default)]
pub struct Partitions {
    pub trend: Reachability,
    pub cisco: Reachability,
}

impl Partitions {
    /// The listener of `vendor` (`trend` or `cisco`).
    pub fn of(&self, vendor: &str) -> Option<&Reachability> {
        match vendor {
            "trend" => Some(&self.trend),
            "cisco" => Some(&self.cisco),
            _ => None,
        }
    }
}

/// Removes a temporary directory when dropped (the CA file of an in-process simulator).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("write CA file {path}: {source}")]
    WriteCa { path: PathBuf, source: std::io::Error },
}

/// Starts both vendor simulators and the control port.
pub async fn start(opts: SimOptions) -> Result<RunningSim, SimError> {
    crate::clients::install_crypto_provider();
    let tls = tls::generate()?;
    let (ca_file, ca_tempdir) = match &opts.ca_file {
        Some(p) => (p.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!("vendor-sim-{}-{}", std::process::id(), rand::random::<u64>()));
            std::fs::create_dir_all(&dir).map_err(|source| SimError::WriteCa { path: dir.clone(), source })?;
            (dir.join("ca.crt"), Some(TempDir(dir)))
        }
    };
    if let Some(parent) = ca_file.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&ca_file, &tls.ca_pem).map_err(|source| SimError::WriteCa { path: ca_file.clone(), source })?;

    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| SimError::Bind { what, addr, source })
    };
    let trend_listener = bind("trend", opts.trend_listen).await?;
    let cisco_listener = bind("cisco", opts.cisco_listen).await?;
    let control_listener = bind("control", opts.control_listen).await?;
    let trend_addr = trend_listener.local_addr().expect("bound");
    let cisco_addr = cisco_listener.local_addr().expect("bound");
    let control_addr = control_listener.local_addr().expect("bound");

    let faults = Faults::default();
    let counts = RequestCounts::default();
    let partitions = Partitions::default();
    let deep_security = DeepSecuritySim::new(opts.deep_security.clone());
    let cisco = CiscoSim::new(opts.cisco.clone());
    let vision_one = VisionOneSim::new(None);
    let cloud_one = CloudOneSim::new();

    let layered = |vendor: &'static str, router: Router| {
        router.layer(axum::middleware::from_fn_with_state(
            VendorLayerState { vendor, faults: faults.clone(), counts: counts.clone() },
            faults::apply,
        ))
    };
    // One Trend listener serves all three APIs: DSM `/api`, Vision One `/v3.0`, Cloud One `/cloudone/api`.
    let trend_router =
        layered("trend", deep_security.api_router().merge(vision_one.api_router()).merge(cloud_one.api_router()));
    let cisco_router = layered("cisco", cisco.api_router());
    let control = control_router(faults.clone(), counts.clone(), partitions.clone())
        .nest("/trend", deep_security.control_router())
        .nest("/visionone", vision_one.control_router())
        .nest("/cloudone", cloud_one.control_router())
        .nest("/cisco", cisco.control_router());

    let tasks = vec![
        tokio::spawn(server::serve_tls(
            trend_listener,
            trend_router,
            tls.server_config.clone(),
            partitions.trend.clone(),
        )),
        tokio::spawn(server::serve_tls(
            cisco_listener,
            cisco_router,
            tls.server_config.clone(),
            partitions.cisco.clone(),
        )),
        tokio::spawn(async move {
            let _ = axum::serve(control_listener, control).await;
        }),
    ];

    let mut trend_info = deep_security.seeded();
    trend_info["url"] = format!("https://{}/api", host_port(trend_addr)).into();
    let mut vision_one_info = vision_one.seeded();
    vision_one_info["url"] = format!("https://{}", host_port(trend_addr)).into();
    let mut cloud_one_info = cloud_one.seeded();
    cloud_one_info["url"] = format!("https://{}{}", host_port(trend_addr), trend::cloud_one::PREFIX).into();
    let mut cisco_info = cisco.seeded();
    cisco_info["url"] = format!("https://{}", host_port(cisco_addr)).into();
    let info = StartupInfo {
        trend: trend_info,
        cisco: cisco_info,
        vision_one: vision_one_info,
        cloud_one: cloud_one_info,
        ca_file,
        control_url: format!("http://{}", host_port(control_addr)),
    };
    Ok(RunningSim {
        info,
        deep_security,
        vision_one,
        cloud_one,
        cisco,
        faults,
        counts,
        partitions,
        ca_pem: tls.ca_pem,
        tasks,
        _ca_tempdir: ca_tempdir,
    })
}

/// `ip:port` (the certificate names 127.0.0.1, ::1 and localhost).
fn host_port(addr: SocketAddr) -> String {
    addr.to_string()
}

#[derive(Clone)]
struct ControlState {
    faults: Faults,
    counts: RequestCounts,
    partitions: Partitions,
}

fn control_router(faults: Faults, counts: RequestCounts, partitions: Partitions) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/counts", get(get_counts))
        .route("/counts/reset", post(reset_counts))
        .route("/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/faults/{id}", delete(remove_fault))
        .route("/partition/{vendor}", get(get_partition).put(put_partition))
        .with_state(ControlState { faults, counts, partitions })
}

async fn get_counts(State(s): State<ControlState>) -> impl IntoResponse {
    Json(s.counts.snapshot())
}

async fn reset_counts(State(s): State<ControlState>) -> impl IntoResponse {
    s.counts.reset();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(s): State<ControlState>) -> impl IntoResponse {
    Json(s.faults.list())
}

async fn add_fault(State(s): State<ControlState>, Json(rule): Json<FaultRule>) -> impl IntoResponse {
    match s.faults.add(rule) {
        Ok(id) => (StatusCode::CREATED, Json(serde_json::json!({ "id": id }))),
        Err(message) => (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "message": message }))),
    }
}

async fn clear_faults(State(s): State<ControlState>) -> impl IntoResponse {
    s.faults.clear();
    StatusCode::NO_CONTENT
}

async fn remove_fault(State(s): State<ControlState>, Path(id): Path<u64>) -> impl IntoResponse {
    if s.faults.remove(id) { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
}

#[derive(Debug, Serialize, Deserialize)]
struct PartitionBody {
    mode: Partition,
}

async fn get_partition(State(s): State<ControlState>, Path(vendor): Path<String>) -> impl IntoResponse {
    match s.partitions.of(&vendor) {
        Some(r) => (StatusCode::OK, Json(serde_json::json!(PartitionBody { mode: r.get() }))),
        None => (StatusCode::NOT_FOUND, Json(serde_json::json!({ "message": "no such vendor" }))),
    }
}

async fn put_partition(
    State(s): State<ControlState>,
    Path(vendor): Path<String>,
    Json(body): Json<PartitionBody>,
) -> impl IntoResponse {
    match s.partitions.of(&vendor) {
        Some(r) => {
            r.set(body.mode);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}
