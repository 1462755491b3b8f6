//! `kubectl workloadkeys`: a kubectl plugin (binary `kubectl-workloadkeys`) for the people who use the operator's
//! resources: what a resource holds and why it is (not) Ready (`status`), a rotation on request (`rotate`), what
//! the operator wrote into a Secret and whether it was changed since (`inspect secret`), and whether a provider would
//! accept a manifest (`check`). It reads what the operator records (status, Events, owner references) and never
//! prints a secret value: a Secret's data is shown as key names and sizes only.
//!
//! Exit codes: 0 ok; 1 a check failed or a resource is not Ready; 2 a usage or API error.

mod check;
mod inspect;
mod rotate;
mod status;

use std::{fmt, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::{
    api::core::v1::Event,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::api::{SecureWorkloadCredential, WorkloadApiKey, conditions};

/// Manage the workload-key-operator's resources (WorkloadApiKey, SecureWorkloadCredential) and their Secrets.
///
/// Never prints a secret value. Exit codes: 0 ok, 1 a check failed or a resource is not Ready, 2 a usage or API
/// error.
#[derive(Parser, Debug)]
#[command(name = "kubectl-workloadkeys", bin_name = "kubectl workloadkeys", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags kubectl users expect, with kubectl's meaning.
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// Every namespace (`status` only).
    #[arg(short = 'A', long, global = true, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show resources (or providers) and why they are (not) Ready.
    ///
    /// Per resource: its provider, Ready and its reason, key ID, role, expiry, next renewal, the Secret and its
    /// restart targets, the latest Events (newest first). With --providers, the providers instead: who uses them and
    /// their policy. Exit code 1 when one shown is not Ready.
    Status(status::StatusArgs),
    /// Rotate a resource's key now (--wait: until the new key is in place).
    ///
    /// Sets the `workloadkeys.io/rotate` annotation to the current time, which the operator acts upon once. It
    /// rotates on request at most once a minute per resource: a sooner request is deferred (Event RotationDeferred),
    /// and --wait says so. With --wait, waits until the operator has rotated (Ready again with a new key) and prints
    /// the new key ID; exit code 1 when that does not happen within --timeout.
    Rotate(rotate::RotateArgs),
    /// Inspect what the operator wrote.
    #[command(subcommand)]
    Inspect(inspect::InspectCommand),
    /// Whether the provider would accept the resources of a manifest.
    ///
    /// A server-side dry-run apply (`dryRun=All`, strict field validation) runs the CRD schema, its CEL rules and
    /// any admission policy; then the provider's namespace rule and policy are checked with the operator's own code.
    /// Prints "accepted" or the reasons for each resource; exit code 1 when one is refused.
    Check(check::CheckArgs),
}

/// Which kind of resource a command is about.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    #[value(name = "WorkloadApiKey", alias = "workloadapikey", alias = "wak")]
    WorkloadApiKey,
    #[value(name = "SecureWorkloadCredential", alias = "secureworkloadcredential", alias = "swc")]
    SecureWorkloadCredential,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::WorkloadApiKey, Kind::SecureWorkloadCredential];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WorkloadApiKey => "WorkloadApiKey",
            Kind::SecureWorkloadCredential => "SecureWorkloadCredential",
        }
    }

    pub fn of(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// `kinds` when given, else both.
    fn selected(kind: Option<Kind>) -> Vec<Kind> {
        kind.map_or_else(|| Kind::ALL.to_vec(), |k| vec![k])
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure that ends the command with exit code 2. Each names the object or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("{call} {object}: {source}")]
    Kube {
        call: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
}

/// `map_err` for a Kubernetes call: the error names the call and the object.
fn kube_call(call: &'static str, object: impl fmt::Display) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { call, object: object.to_string(), source }
}

/// How a command ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A check failed or a resource is not Ready (exit code 1).
    Failed,
}

impl Outcome {
    fn failed_if(failed: bool) -> Self {
        if failed { Outcome::Failed } else { Outcome::Ok }
    }
}

/// Runs a parsed command line and returns the process's exit code (errors go to stderr).
pub async fn execute(cli: Cli) -> ExitCode {
    crate::clients::install_crypto_provider();
    match run(cli).await {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<Outcome, Error> {
    let target = Target::connect(&cli.global).await?;
    match cli.command {
        Command::Status(args) => status::run(&target, args).await,
        Command::Rotate(args) => {
            target.single_namespace("rotate")?;
            rotate::run(&target, args).await
        }
        Command::Inspect(cmd) => {
            target.single_namespace("inspect")?;
            inspect::run(&target, cmd).await
        }
        Command::Check(args) => {
            target.single_namespace("check")?;
            check::run(&target, args).await
        }
    }
}

/// The cluster and namespace a command works on.
pub struct Target {
    pub client: Client,
    /// `-n`, else the context's namespace.
    pub namespace: String,
    pub all_namespaces: bool,
}

impl Target {
    async fn connect(global: &Global) -> Result<Self, Error> {
        let options = KubeConfigOptions { context: global.context.clone(), ..Default::default() };
        let bad = |e: &dyn fmt::Display| Error::Kubeconfig(e.to_string());
        let config = match &global.kubeconfig {
            Some(path) => {
                let file =
                    Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(file, &options).await.map_err(|e| bad(&e))?
            }
            None if global.context.is_some() => Config::from_kubeconfig(&options).await.map_err(|e| bad(&e))?,
            None => Config::infer().await.map_err(|e| bad(&e))?,
        };
        let namespace = global.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| bad(&e))?;
        Ok(Target { client, namespace, all_namespaces: global.all_namespaces })
    }

    fn single_namespace(&self, verb: &str) -> Result<(), Error> {
        if self.all_namespaces {
            return Err(Error::Usage(format!("{verb} works in one namespace: use -n NAMESPACE, not -A")));
        }
        Ok(())
    }

    fn waks(&self, namespace: &str) -> Api<WorkloadApiKey> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn swcs(&self, namespace: &str) -> Api<SecureWorkloadCredential> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

/// The resource `name` of the target namespace, of `kind` or of whichever kind has one by that name.
async fn find_resource(target: &Target, name: &str, kind: Option<Kind>) -> Result<Resource, Error> {
    let ns = &target.namespace;
    let mut found = Vec::new();
    for k in Kind::selected(kind) {
        let object = format!("{k} {ns}/{name}");
        match k {
            Kind::WorkloadApiKey => {
                if let Some(o) = target.waks(ns).get_opt(name).await.map_err(kube_call("get", &object))? {
                    found.push(Resource::Wak(Box::new(o)));
                }
            }
            Kind::SecureWorkloadCredential => {
                if let Some(o) = target.swcs(ns).get_opt(name).await.map_err(kube_call("get", &object))? {
                    found.push(Resource::Swc(Box::new(o)));
                }
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::NotFound(match kind {
            Some(k) => format!("{k} {ns}/{name} not found"),
            None => format!("no WorkloadApiKey or SecureWorkloadCredential named {name} in namespace {ns}"),
        })),
        _ => Err(Error::Usage(format!(
            "both a WorkloadApiKey and a SecureWorkloadCredential are named {ns}/{name}: choose one with --kind"
        ))),
    }
}

/// A resource of either kind.
enum Resource {
    Wak(Box<WorkloadApiKey>),
    Swc(Box<SecureWorkloadCredential>),
}

impl Resource {
    fn kind(&self) -> Kind {
        match self {
            Resource::Wak(_) => Kind::WorkloadApiKey,
            Resource::Swc(_) => Kind::SecureWorkloadCredential,
        }
    }

    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Resource::Wak(o) => &o.metadata,
            Resource::Swc(o) => &o.metadata,
        }
    }

    /// `WorkloadApiKey team-a/reporting`, for messages.
    fn display(&self) -> String {
        let m = self.meta();
        format!("{} {}/{}", self.kind(), m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""))
    }

    fn conditions(&self) -> &[Condition] {
        match self {
            Resource::Wak(o) => o.status.as_ref().map_or(&[], |s| &s.conditions),
            Resource::Swc(o) => o.status.as_ref().map_or(&[], |s| &s.conditions),
        }
    }

    /// The current key: a WorkloadApiKey's vendor key ID, a SecureWorkloadCredential's credential ID (provision mode)
    /// or else its API key's fingerprint.
    fn key_id(&self) -> Option<String> {
        match self {
            Resource::Wak(o) => o.status.as_ref()?.key_id.as_ref().map(ToString::to_string),
            Resource::Swc(o) => {
                let s = o.status.as_ref()?;
                s.credential_id.clone().or_else(|| s.api_key_fingerprint.clone())
            }
        }
    }

    fn is_ready(&self) -> bool {
        ready_is_current(self.conditions(), self.meta().generation)
    }
}

/// `Ready=True`, as recorded for the current generation.
fn ready_is_current(conditions: &[Condition], generation: Option<i64>) -> bool {
    conditions::find(conditions, conditions::READY)
        .is_some_and(|c| c.status == "True" && (c.observed_generation.is_none() || c.observed_generation == generation))
}

/// `True (Ready)` or `False (SecretConflict): message`.
fn describe_ready(conditions: &[Condition]) -> String {
    match conditions::find(conditions, conditions::READY) {
        Some(c) if c.message.is_empty() => format!("{} ({})", c.status, c.reason),
        Some(c) => format!("{} ({}): {}", c.status, c.reason, c.message),
        None => "unknown (the operator has not reported yet)".into(),
    }
}

/// The Events of the object `kind` `namespace/name` (of `uid` when known), newest first, at most `limit`.
async fn events_of(
    target: &Target,
    namespace: &str,
    kind: &str,
    name: &str,
    uid: Option<&str>,
    limit: usize,
) -> Result<Vec<Event>, Error> {
    let api: Api<Event> = Api::namespaced(target.client.clone(), namespace);
    // One object's Events; the bound keeps a very chatty object from making this a large read.
    let params =
        ListParams::default().fields(&format!("involvedObject.kind={kind},involvedObject.name={name}")).limit(500);
    let list = api.list(&params).await.map_err(kube_call("list", format!("Events of {kind} {namespace}/{name}")))?;
    let mut events: Vec<Event> =
        list.items.into_iter().filter(|e| uid.is_none() || e.involved_object.uid.as_deref() == uid).collect();
    events.sort_by_key(|e| std::cmp::Reverse(event_time(e)));
    events.truncate(limit);
    Ok(events)
}

/// When an Event last happened: its series' last observation, else its last timestamp, else its time.
fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// One line per Event: `<time> (<age> ago) <type> <reason>: <message>`.
fn print_events(events: &[Event], indent: &str) {
    if events.is_empty() {
        println!("{indent}(none)");
    }
    for e in events {
        let when = event_time(e).map_or_else(|| "?".into(), |t| when(&Time(t)));
        let count = e.series.as_ref().and_then(|s| s.count).or(e.count).filter(|c| *c > 1);
        println!(
            "{indent}{when} {} {}: {}{}",
            e.type_.as_deref().unwrap_or("?"),
            e.reason.as_deref().unwrap_or("?"),
            e.message.as_deref().unwrap_or("").trim(),
            count.map(|c| format!(" (x{c})")).unwrap_or_default()
        );
    }
}

/// A time as RFC 3339 and relative to now: `2026-12-05T14:00:00Z (3m ago)`, `… (in 13d 23h)`.
fn when(t: &Time) -> String {
    let delta = t.0.duration_since(Timestamp::now());
    let rel = relative(delta.abs());
    if delta.is_negative() { format!("{} ({rel} ago)", t.0) } else { format!("{} (in {rel})", t.0) }
}

fn relative(d: SignedDuration) -> String {
    let s = d.as_secs();
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn opt_when(t: Option<&Time>) -> String {
    t.map_or_else(|| "-".into(), when)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_at_a_glance() {
        assert_eq!(relative(SignedDuration::from_secs(42)), "42s");
        assert_eq!(relative(SignedDuration::from_secs(600)), "10m");
        assert_eq!(relative(SignedDuration::from_secs(3 * 3600 + 120)), "3h 2m");
        assert_eq!(relative(SignedDuration::from_secs(14 * 86_400 - 3600)), "13d 23h");
    }

    #[test]
    fn ready_must_be_true_for_the_current_generation() {
        let c = |status: &str, generation| Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "Ready".into(),
            message: String::new(),
            observed_generation: generation,
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        };
        assert!(ready_is_current(&[c("True", Some(2))], Some(2)));
        assert!(!ready_is_current(&[c("True", Some(1))], Some(2)), "a changed spec is not Ready yet");
        assert!(!ready_is_current(&[c("False", Some(2))], Some(2)));
        assert!(!ready_is_current(&[], Some(2)));
    }

    #[test]
    fn kinds_parse_by_name_and_short_name() {
        assert_eq!(Kind::from_str("wak", true), Ok(Kind::WorkloadApiKey));
        assert_eq!(Kind::from_str("SecureWorkloadCredential", false), Ok(Kind::SecureWorkloadCredential));
        assert_eq!(Kind::of("WorkloadApiKey"), Some(Kind::WorkloadApiKey));
        assert_eq!(Kind::of("Secret"), None);
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
