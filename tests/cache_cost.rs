//! What one resource an app team writes can cost in the operator's watch cache (issue 19 §5): the largest
//! WorkloadApiKey and SecureWorkloadCredential the CRDs admit (every free-text field, map and list at its bound), plus
//! as much metadata as the API server takes (labels and annotations up to its 256 KiB), decoded as the watch decodes
//! it and trimmed as the cache trims it. The cost is the growth of the resident set while a thousand copies are held;
//! the figure is printed and bounded, so a field left unbounded, or tenant metadata kept in the cache, fails here.

use serde_json::{Value, json};
use workload_key_operator::{
    api::{SecureWorkloadCredential, WorkloadApiKey},
    controller::{reconcile::Managed, slim},
};

/// How many copies are held to measure one: enough that the growth of the resident set is the entries'.
const COPIES: usize = 1000;

/// The process's resident set, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// The resident bytes one cache entry of `json` costs, measured over [`COPIES`] of them held at once.
fn cost_of<K: Managed>(json: &[u8]) -> (usize, Vec<K>) {
    let _warm: K = cache_entry(json);
    let before = rss();
    let held: Vec<K> = (0..COPIES).map(|_| cache_entry(json)).collect();
    (rss().saturating_sub(before) / COPIES, held)
}

/// A resource as the watch cache holds it: decoded from the API server's JSON, then trimmed.
fn cache_entry<K: Managed>(json: &[u8]) -> K {
    let mut o: K = serde_json::from_slice(json).expect("an admitted resource decodes");
    slim(&mut o);
    o
}

fn s(n: usize) -> String {
    "x".repeat(n)
}

/// 256 KiB of tenant labels and annotations, the API server's limit for a resource's metadata annotations.
fn tenant_metadata() -> Value {
    let annotations: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("example.com/note-{i}"), json!(s(4000)))).collect();
    let labels: serde_json::Map<String, Value> = (0..64).map(|i| (format!("team{i}"), json!(s(63)))).collect();
    let mut annotations = annotations;
    annotations.insert("workloadkeys.io/rotate".into(), json!(s(4000)));
    json!({
        "name": s(253), "namespace": s(63), "uid": "0b6f5d7e-1111-4c4c-9a9a-123456789abc", "generation": 7,
        "resourceVersion": "123456789", "finalizers": ["workloadkeys.io/revoke"],
        "labels": labels, "annotations": annotations
    })
}

/// `spec.secret` at its bounds: name, 16 labels and 16 annotations at their total sizes, 16 restart targets, 16
/// data templates at their total size (64 KiB) and the longest type.
fn largest_secret_template() -> Value {
    let data: serde_json::Map<String, Value> = (0..16).map(|i| (format!("k{i:02}"), json!(s(4096)))).collect();
    let template = json!({"data": data, "mergePolicy": "Merge", "type": s(253)});
    let labels: serde_json::Map<String, Value> = (0..16).map(|i| (format!("l{i:02}"), json!(s(252)))).collect();
    let annotations: serde_json::Map<String, Value> = (0..16).map(|i| (format!("a{i:02}"), json!(s(508)))).collect();
    let targets: Vec<Value> =
        (0..16).map(|i| json!({"kind": "StatefulSet", "name": format!("{i:02}{}", s(251))})).collect();
    json!({"name": s(253), "labels": labels, "annotations": annotations, "rolloutRestartTargets": targets,
           "template": template})
}

#[test]
fn the_largest_admitted_resources_cost_a_bounded_amount_in_the_cache() {
    let duration = format!("{}h", "1".repeat(63));
    let wak = json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "WorkloadApiKey", "metadata": tenant_metadata(),
        "spec": {
            "providerRef": {"kind": "ClusterKeyProvider", "name": s(253)},
            "keyName": s(200), "description": s(500), "role": {"name": s(254)},
            "locale": "ja-JP", "timeZone": format!("A{}", s(63)), "expiresAfter": duration,
            "rotation": {"renewBefore": duration, "every": duration, "strategy": "Replace", "gracePeriod": duration,
                         "rolloutTimeout": duration},
            "secret": largest_secret_template(), "deletionPolicy": "Delete"
        }
    });
    let swc = json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "SecureWorkloadCredential", "metadata": tenant_metadata(),
        "spec": {
            "providerRef": {"kind": "ClusterKeyProvider", "name": s(253)},
            "source": {"provision": {"description": s(200)}},
            "capabilities": ["sensor_management", "flow_inventory_query", "user_role_scope_management",
                             "app_policy_management", "external_integration", "user_data_upload"],
            "verifyInterval": duration,
            "rotation": {"every": duration, "gracePeriod": duration, "rolloutTimeout": duration},
            "secret": largest_secret_template(), "deletionPolicy": "Delete"
        }
    });
    let wak_bytes = serde_json::to_vec(&wak).unwrap();
    let swc_bytes = serde_json::to_vec(&swc).unwrap();
    let (wak_cost, wak_objs) = cost_of::<WorkloadApiKey>(&wak_bytes);
    let (swc_cost, swc_objs) = cost_of::<SecureWorkloadCredential>(&swc_bytes);
    let small = serde_json::to_vec(&json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "WorkloadApiKey",
        "metadata": {"name": "reporting", "namespace": "payments", "uid": "0b6f5d7e-1111-4c4c-9a9a-123456789abc"},
        "spec": {"providerRef": {"name": "trend"}, "role": {"name": "Auditor"}}
    }))
    .unwrap();
    let (small_cost, small_objs) = cost_of::<WorkloadApiKey>(&small);
    eprintln!(
        "largest admitted WorkloadApiKey: {} bytes as JSON, about {wak_cost} bytes in the cache; \
         SecureWorkloadCredential: {} and {swc_cost}; a small WorkloadApiKey: {small_cost}",
        wak_bytes.len(),
        swc_bytes.len()
    );
    assert!(wak_bytes.len() > 256 * 1024, "the request carried the tenant's 256 KiB of metadata");
    let wak_obj = &wak_objs[0];
    assert!(wak_obj.metadata.labels.as_ref().is_none_or(|l| l.is_empty()), "labels are not cached");
    assert_eq!(wak_obj.metadata.annotations.as_ref().map(|a| a.len()), Some(1), "only the rotate request is cached");
    let cached_secret = wak_obj.spec.secret.as_deref().unwrap();
    assert!(cached_secret.template.is_none(), "data templates are not cached (a reconcile reads them fresh)");
    assert_eq!(cached_secret.rollout_restart_targets.len(), 16, "what maps a workload to its resources is");
    // The spec's strings at their bounds are about 21 KB; maps, boxes and allocator rounding add the rest.
    for (what, cost) in [("WorkloadApiKey", wak_cost), ("SecureWorkloadCredential", swc_cost)] {
        assert!(cost < 32 * 1024, "{what}: {cost} bytes in the cache for one resource");
    }
    assert!(small_cost < 4096, "a small resource: {small_cost} bytes");
    drop((wak_objs, swc_objs, small_objs));
}
