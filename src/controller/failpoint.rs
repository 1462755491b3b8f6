//! Crash points for the chaos tests. Built only with the cargo feature `failpoints`, which `make test` enables:
//! then `WKO_FAILPOINT=<name>` makes the operator exit (code 97) at that point, as a SIGKILL between a vendor call
//! and the record of its result would. Without the feature (every release build) `hit` is empty and the binary
//! holds no trace of it (`make release-check` proves that).

/// Exits the process when `WKO_FAILPOINT` names this point.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if std::env::var("WKO_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!(failpoint = name, "fail-point reached: exiting");
        std::process::exit(97);
    }
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
