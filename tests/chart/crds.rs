//! The chart's copy of the CRDs is `crds/`, and renders as the source CRDs.

use serde_json::{Value, json};

use crate::{
    cases::{Case, DEFAULT, all_of, find, render},
    chart_dir, parse_docs,
    support::repo_root,
};

#[test]
fn chart_crd_copy_is_byte_identical_to_crds_dir() {
    let source = std::fs::read(repo_root().join("crds/workloadkeys.io.yaml")).unwrap();
    let copy = std::fs::read(chart_dir().join("files/crds/workloadkeys.io.yaml")).unwrap();
    assert!(source == copy, "charts/workload-key-operator/files/crds/ differs from crds/: run `make chart-crds`");
    let files: Vec<_> =
        std::fs::read_dir(chart_dir().join("files/crds")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1, "the chart holds exactly the CRD file of crds/: {files:?}");
}

/// Every number as a float: Helm's `fromYaml | toYaml` writes `1.0` as `1`, the same value to the API server.
fn numbers_as_floats(v: &mut Value) {
    match v {
        Value::Number(n) => *v = json!(n.as_f64().unwrap()),
        Value::Array(a) => a.iter_mut().for_each(numbers_as_floats),
        Value::Object(o) => o.values_mut().for_each(numbers_as_floats),
        _ => {}
    }
}

#[test]
fn rendered_crds_are_the_source_crds_and_kept_on_uninstall() {
    let source: Vec<Value> =
        parse_docs(&std::fs::read_to_string(repo_root().join("crds/workloadkeys.io.yaml")).unwrap());
    assert_eq!(source.len(), 4, "WorkloadApiKey, SecureWorkloadCredential, KeyProvider, ClusterKeyProvider");
    let docs = render(&DEFAULT);
    let rendered = all_of(&docs, "CustomResourceDefinition");
    assert_eq!(rendered.len(), source.len());
    for src in &source {
        let name = src["metadata"]["name"].as_str().unwrap();
        let mut crd = find(&docs, "CustomResourceDefinition", name).expect("rendered CRD").clone();
        let meta = crd["metadata"].as_object_mut().unwrap();
        let annotations = meta.remove("annotations").expect("annotations");
        assert_eq!(annotations["helm.sh/resource-policy"], "keep");
        meta.remove("labels");
        let mut src = src.clone();
        numbers_as_floats(&mut crd);
        numbers_as_floats(&mut src);
        assert_eq!(crd, src, "{name}: the rendered CRD is the source CRD plus annotations and labels");
    }

    let docs = render(&Case { name: "crds not kept", args: &["--set", "crds.keep=false"] });
    for crd in all_of(&docs, "CustomResourceDefinition") {
        assert!(crd["metadata"].get("annotations").is_none());
    }
}
