//! `crds/` is generated from the Rust types; this fails when the checked-in copy is stale.

#[test]
fn checked_in_crds_are_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/workloadkeys.io.yaml");
    let on_disk = std::fs::read_to_string(path).expect("read crds/workloadkeys.io.yaml");
    assert!(
        on_disk == workload_key_operator::api::crds_yaml(),
        "crds/workloadkeys.io.yaml is stale: run `make crds` and commit the result"
    );
}
