//! The Helm chart: `helm lint` and `helm template` for default and non-default values, policy checks (checkov on the
//! rendered chart and the Dockerfile, hadolint), RBAC without wildcards and exactly the rules the operator needs,
//! the chart's CRD copy, and `helm install` into the real control plane, after which the operator binary, run out of
//! cluster as the chart's ServiceAccount (kubeconfig `as:`), brings one resource of each kind to Ready: the chart's
//! RBAC is sufficient, cluster-wide and for two namespaces, and an app-team user bound to `edit` gets a key but no
//! provider or admin Secret. Only the install needs the `sim` feature.

#[path = "../support/mod.rs"]
mod support;

mod cases;
mod crds;
#[cfg(feature = "sim")]
mod install;
mod policy;
mod rbac;
mod render;

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use serde_json::Value;
pub use support::helm_bin;
use support::repo_root;

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/workload-key-operator")
}

pub fn venv_tool(name: &str) -> PathBuf {
    let path = repo_root().join(".venv/bin").join(name);
    assert!(path.exists(), "{} is missing: run `make venv` (tests/conformance/requirements.txt)", path.display());
    path
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"))
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `helm <args>`, which must succeed; returns stdout.
pub fn helm(args: &[&str]) -> String {
    let out = run(Command::new(helm_bin()).args(args));
    assert!(out.status.success(), "helm {args:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Every YAML document of a stream, as JSON values (empty documents dropped).
pub fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| {
            use serde::Deserialize;
            Value::deserialize(d).expect("valid YAML")
        })
        .filter(|v| !v.is_null())
        .collect()
}
