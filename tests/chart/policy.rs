//! Policy checks: checkov (chart and Dockerfile), hadolint, and the Docker build context.

use std::{collections::BTreeSet, process::Command};

use serde_json::{Value, json};

use crate::{
    cases::{DEFAULT, HARDENED, SERVICE_MONITOR, TWO_NAMESPACES, render_yaml},
    chart_dir, run,
    support::repo_root,
    text, venv_tool,
};

/// checkov findings that do not apply to this chart, each with the reason (also in the chart's README.md).
const CHECKOV_SKIPS: &[(&str, &str)] = &[
    ("CKV_K8S_38", "the operator is a Kubernetes API client: it needs its ServiceAccount token"),
    ("CKV_K8S_43", "no image digest exists before a release is built; set image.digest to pin one"),
    ("CKV_K8S_15", "versioned tags are immutable; Always makes every restart depend on the registry"),
    ("CKV_K8S_21", "with watchNamespaces: Events of ClusterKeyProviders go to `default`, so a Role there allows them"),
    ("CKV_K8S_35", "only with secretHashKey.existingSecret: the operator reads that key from an env var only"),
];

fn checkov(target_args: &[&str], framework: &str) {
    let skips: Vec<&str> = CHECKOV_SKIPS.iter().map(|(id, _)| *id).collect();
    let skips = skips.join(",");
    let mut args = vec!["--framework", framework, "--skip-download", "--compact", "--quiet", "-o", "json"];
    args.extend_from_slice(target_args);
    args.extend_from_slice(&["--skip-check", &skips]);
    let out = run(Command::new(venv_tool("checkov")).args(&args).env("BC_SKIP_MAPPING", "TRUE"));
    let stdout = text(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("checkov {args:?} printed no JSON report ({e}):\n{stdout}\n{}", text(&out.stderr)));
    // One framework: an object; several: a list of them.
    let reports = if report.is_array() { report.as_array().unwrap().clone() } else { vec![report] };
    let mut passed = 0;
    for r in &reports {
        let failed = r["results"]["failed_checks"].as_array().cloned().unwrap_or_default();
        let listed: Vec<String> = failed
            .iter()
            .map(|f| format!("{} {} ({}) in {}", f["check_id"], f["check_name"], f["resource"], f["file_path"]))
            .collect();
        assert!(
            listed.is_empty(),
            "checkov failed checks (fix them, or skip with a reason in CHECKOV_SKIPS and the chart README):\n{}",
            listed.join("\n")
        );
        passed += r["summary"]["passed"].as_u64().unwrap_or(0);
    }
    assert!(passed > 0, "checkov ran no check on {target_args:?}");
    assert!(out.status.success(), "checkov exited with {:?}:\n{}", out.status, text(&out.stderr));
}

#[test]
fn checkov_finds_no_failed_check_in_the_rendered_chart_and_the_dockerfile() {
    // Not a hidden directory (tempdir's default `.tmp…`): checkov skips those.
    let dir = tempfile::Builder::new().prefix("wko-chart-").tempdir().unwrap();
    for (i, case) in [&DEFAULT, &TWO_NAMESPACES, &SERVICE_MONITOR, &HARDENED].iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.yaml")), render_yaml(case)).unwrap();
    }
    checkov(&["-d", dir.path().to_str().unwrap()], "kubernetes");
    let dockerfile = repo_root().join("Dockerfile");
    checkov(&["-f", dockerfile.to_str().unwrap()], "dockerfile");
}

#[test]
fn every_checkov_skip_is_justified_in_the_chart_readme() {
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    for (id, _) in CHECKOV_SKIPS {
        let line = readme.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("{id} is not in the chart README"));
        assert!(line.len() > id.len() + 40, "{id}: the README gives no reason: {line}");
    }
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let out = run(Command::new(venv_tool("hadolint")).arg(repo_root().join("Dockerfile")));
    assert!(out.status.success(), "hadolint:\n{}{}", text(&out.stdout), text(&out.stderr));
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.starts_with("gcr.io/distroless/"), "distroless runtime stage");
    assert!(runtime.contains("USER 65532:65532"), "numeric non-root user");
    assert!(!runtime.contains("\nRUN "), "nothing runs in the runtime stage (it has no shell)");
    assert!(
        dockerfile.contains("--bin workload-key-operator") && !dockerfile.contains("--features"),
        "release build of the operator only"
    );
}

/// The paths `.dockerignore` admits (it excludes everything, then re-admits `!path` entries).
fn docker_context_roots() -> Vec<String> {
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    let mut lines = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    assert_eq!(lines.next(), Some("*"), ".dockerignore starts by excluding everything");
    let roots: BTreeSet<String> = lines
        .map(|l| {
            let admitted = l.strip_prefix('!').unwrap_or_else(|| panic!(".dockerignore: {l} is not an exception"));
            admitted.trim_end_matches("/**").trim_end_matches('/').to_owned()
        })
        .collect();
    roots.into_iter().collect()
}

#[test]
fn the_docker_build_context_holds_every_cargo_target_the_build_needs() {
    // No Docker engine here: rebuild the builder stage's /src from the context its COPY lines see, and let cargo
    // read the manifest there (every declared target must exist) and resolve it from Cargo.lock alone.
    let roots = docker_context_roots();
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let builder = dockerfile.split("\nFROM ").nth(1).expect("a builder stage");
    let work = tempfile::Builder::new().prefix("wko-docker-context-").tempdir().unwrap();
    let mut copied = 0;
    for line in builder.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (dest, sources) = words.split_last().unwrap();
        for src in sources {
            assert!(roots.iter().any(|r| r == src), "COPY {src}: not admitted by .dockerignore ({roots:?})");
            let from = repo_root().join(src);
            let to = work.path().join(dest.trim_start_matches("./")).join(if dest.ends_with('/') { *src } else { "" });
            let status = Command::new("cp").arg("-r").arg(&from).arg(&to).status().unwrap();
            assert!(status.success(), "cp {} {}", from.display(), to.display());
            copied += 1;
        }
    }
    assert!(copied >= 3, "Cargo.toml, Cargo.lock and src/ are copied");
    // Not `--offline`: a fresh machine's registry cache lacks crates for other targets, which `fetch` wants too.
    let out = run(Command::new(env!("CARGO")).args(["fetch", "--locked"]).current_dir(work.path()));
    assert!(out.status.success(), "cargo cannot read the image's build context:\n{}", text(&out.stderr));
    let out = run(Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--no-deps", "--format-version", "1"])
        .current_dir(work.path()));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata");
    let bins: Vec<&str> = meta["packages"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == json!(["bin"]))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(bins.contains(&"workload-key-operator"), "{bins:?}");
}
