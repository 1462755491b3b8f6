//! Layout rules the compiler cannot enforce.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The source without `//` and `/* */` comments (string literals are kept: a path in one is still a use).
fn without_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut in_string = false;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if rest.starts_with("\\\"") || rest.starts_with("\\\\") {
                out.push_str(&rest[..2]);
                rest = &rest[2..];
                continue;
            }
            if c == '"' {
                in_string = false;
            }
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |i| &rest[i..]);
            continue;
        } else if rest.starts_with("/*") {
            rest = rest.find("*/").map_or("", |i| &rest[i + 2..]);
            continue;
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Lines that import or name the Kubernetes crates: `use kube…`, a `kube::` path, any `k8s_openapi`.
fn kubernetes_references(code: &str) -> Vec<String> {
    let word_at = |line: &str, at: usize| at == 0 || !line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
    code.lines()
        .filter(|line| {
            let hits = |needle: &str| line.match_indices(needle).any(|(at, _)| word_at(line, at));
            hits("kube::") || hits("k8s_openapi") || hits("kube_") || {
                let t = line.trim_start();
                t.starts_with("use kube") || t.starts_with("pub use kube") || t.contains("extern crate kube")
            }
        })
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn the_detector_sees_imports_and_ignores_comments() {
    let code = without_comments(
        "// use kube::Api;\n/* k8s_openapi */\nlet s = \"// not a comment\";\nuse kube::Client;\n\
         fn f() -> k8s_openapi::ByteString {}\nuse kube;\nlet my_kube::x = 1;\n",
    );
    assert_eq!(
        kubernetes_references(&code),
        ["use kube::Client;", "fn f() -> k8s_openapi::ByteString {}", "use kube;"]
    );
}

#[test]
fn clients_never_import_kubernetes_crates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/clients");
    let files = rust_files(&dir);
    assert!(files.len() > 5, "found the clients' sources");
    let offenders: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let code = without_comments(&std::fs::read_to_string(f).unwrap());
            kubernetes_references(&code).into_iter().map(move |l| format!("{}: {l}", f.display()))
        })
        .collect();
    assert!(offenders.is_empty(), "src/clients must not know Kubernetes:\n{}", offenders.join("\n"));
}
