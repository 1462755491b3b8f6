//! Restarting the workloads that use a target Secret, and holding a replaced key until their rollouts complete.
//! Pure: which restart comes next for the Secret data written ([`next`]), whether a workload's rollout is complete
//! ([`Rollout`]), and whether a replaced key may be revoked now ([`Gate`]). The I/O is in `io`, beside it.
//!
//! The record in status (`status.rollout`) names the keyed hash of the Secret data the restarts were for, so a
//! resync, a requeue or an operator restart with unchanged data restarts nothing; the first write of the Secret
//! only records that hash (nobody used the Secret before).

pub mod io;

use std::time::Duration;

use k8s_openapi::{
    api::apps::v1::{DaemonSet, Deployment, StatefulSet},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};

use crate::{
    api::{RolloutTarget, SecretRollout, TargetRollout},
    controller::{secret::SecretState, vendor_key::shift},
};

/// What the rollout of the current Secret data needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Record this (a first write, or new data and the targets to restart) before acting on it.
    Record(SecretRollout),
    /// Restart this target (it is recorded, not yet restarted).
    Restart(RolloutTarget),
    /// Read the targets' rollouts (some are not complete yet).
    Observe,
    /// Nothing to do.
    Idle,
}

/// Decides the next rollout action for the Secret the status says was written (`written_hash`), as observed now.
/// Order: nothing while the Secret is not as written (the kind repairs it first); the first write only records;
/// new data records every target to restart (the intent, so a crash restarts each once); then each restart, one
/// at a time; then the rollouts are watched until complete.
pub fn next(
    targets: &[RolloutTarget],
    written_hash: Option<&str>,
    secret: SecretState,
    recorded: Option<&SecretRollout>,
    now: Timestamp,
) -> Next {
    let Some(hash) = written_hash else { return Next::Idle };
    if targets.is_empty() || secret != SecretState::Intact {
        return Next::Idle;
    }
    let Some(recorded) = recorded else {
        return Next::Record(SecretRollout { secret_hash: hash.to_owned(), complete: true, ..Default::default() });
    };
    if recorded.secret_hash != hash {
        return Next::Record(SecretRollout {
            secret_hash: hash.to_owned(),
            started_at: Some(Time(now)),
            complete: false,
            timed_out: false,
            targets: targets
                .iter()
                .map(|t| TargetRollout {
                    kind: t.kind,
                    name: t.name.clone(),
                    restarted_at: None,
                    complete: false,
                    not_found: false,
                    waiting_for: None,
                })
                .collect(),
        });
    }
    if let Some(t) = recorded.targets.iter().find(|t| t.restarted_at.is_none() && !t.not_found) {
        return Next::Restart(t.target());
    }
    if recorded.complete { Next::Idle } else { Next::Observe }
}

/// What a workload's rollout looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    NotFound,
    Complete,
    /// Not complete: what it still waits for.
    Waiting(String),
}

fn generation_pending(meta: &ObjectMeta, observed: Option<i64>) -> Option<String> {
    let generation = meta.generation.unwrap_or(0);
    let observed = observed.unwrap_or(0);
    (observed < generation).then(|| format!("observedGeneration {observed} < generation {generation}"))
}

/// A Deployment is rolled out when its controller saw the current spec and every replica is updated and available,
/// with no replica of an older ReplicaSet left (`status.replicas` counts all of them).
pub fn deployment(d: &Deployment) -> Rollout {
    let st = d.status.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let pending = generation_pending(&d.metadata, st.observed_generation).or_else(|| {
        let (updated, total, available) =
            (st.updated_replicas.unwrap_or(0), st.replicas.unwrap_or(0), st.available_replicas.unwrap_or(0));
        (updated != want || total != want || available != want)
            .then(|| format!("replicas {want}: updated {updated}, total {total}, available {available}"))
    });
    pending.map_or(Rollout::Complete, Rollout::Waiting)
}

/// A StatefulSet is rolled out when every replica runs the update revision and is available.
pub fn stateful_set(s: &StatefulSet) -> Rollout {
    let st = s.status.clone().unwrap_or_default();
    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let pending = generation_pending(&s.metadata, st.observed_generation).or_else(|| {
        let (updated, available) = (st.updated_replicas.unwrap_or(0), st.available_replicas.unwrap_or(0));
        if updated != want || st.replicas != want || available != want {
            return Some(format!("replicas {want}: updated {updated}, total {}, available {available}", st.replicas));
        }
        (st.current_revision != st.update_revision).then(|| {
            format!(
                "revision {} is not yet {}",
                st.current_revision.as_deref().unwrap_or("?"),
                st.update_revision.as_deref().unwrap_or("?")
            )
        })
    });
    pending.map_or(Rollout::Complete, Rollout::Waiting)
}

/// A DaemonSet is rolled out when every node that should run it runs the updated pod, and none is unavailable.
pub fn daemon_set(d: &DaemonSet) -> Rollout {
    let st = d.status.clone().unwrap_or_default();
    let pending = generation_pending(&d.metadata, st.observed_generation).or_else(|| {
        let want = st.desired_number_scheduled;
        let (updated, unavailable) = (st.updated_number_scheduled.unwrap_or(0), st.number_unavailable.unwrap_or(0));
        (updated != want || unavailable != 0)
            .then(|| format!("desired {want}: updated {updated}, unavailable {unavailable}"))
    });
    pending.map_or(Rollout::Complete, Rollout::Waiting)
}

/// The record with the targets' rollouts as observed (`observed[i]` for `record.targets[i]`), and whether
/// `rolloutTimeout` ran out with some incomplete (then the record is closed as timed out: the keys go anyway).
pub fn observed(
    record: &SecretRollout,
    observed: &[Rollout],
    timeout: Duration,
    now: Timestamp,
) -> (SecretRollout, Vec<String>) {
    let mut next = record.clone();
    for (t, o) in next.targets.iter_mut().zip(observed) {
        t.complete = !matches!(o, Rollout::Waiting(_));
        t.not_found = *o == Rollout::NotFound;
        t.waiting_for = match o {
            Rollout::Waiting(why) => Some(why.clone()),
            _ => None,
        };
    }
    next.complete = next.targets.iter().all(|t| t.complete);
    let mut timed_out = Vec::new();
    if !next.complete && deadline(record, timeout).is_some_and(|d| d <= now) {
        timed_out = next
            .targets
            .iter()
            .filter(|t| !t.complete)
            .map(|t| format!("{}: {}", t.target(), t.waiting_for.as_deref().unwrap_or("not complete")))
            .collect();
        next.complete = true;
        next.timed_out = true;
    }
    (next, timed_out)
}

/// When the wait for a rollout ends regardless: `rolloutTimeout` after the restarts began.
pub fn deadline(record: &SecretRollout, timeout: Duration) -> Option<Timestamp> {
    record.started_at.as_ref().map(|t| shift(t.0, timeout, true))
}

/// Whether replaced keys may go: their grace period is over AND the rollouts of the Secret data that replaced
/// them are complete, or `rolloutTimeout` passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gate {
    /// No rollout holds keys back (no targets, or all rolled out, or timed out).
    pub open: bool,
    /// When a closed gate opens regardless (`rolloutTimeout`); a rollout's progress may open it sooner.
    pub deadline: Option<Timestamp>,
}

impl Gate {
    pub const OPEN: Gate = Gate { open: true, deadline: None };

    /// The gate for the written Secret data: closed while its restarts are pending or its rollouts incomplete.
    pub fn of(
        targets: &[RolloutTarget],
        written_hash: Option<&str>,
        recorded: Option<&SecretRollout>,
        timeout: Duration,
    ) -> Gate {
        let Some(record) = recorded else { return Gate::OPEN };
        if targets.is_empty() {
            return Gate::OPEN;
        }
        if written_hash != Some(record.secret_hash.as_str()) {
            // New data whose restarts are not recorded yet: they come first, in this same reconcile.
            return Gate { open: false, deadline: None };
        }
        if record.complete { Gate::OPEN } else { Gate { open: false, deadline: deadline(record, timeout) } }
    }

    /// A key whose grace period ends at `revoke_at` may be revoked now.
    pub fn may_revoke(&self, revoke_at: Timestamp, now: Timestamp) -> bool {
        revoke_at <= now && (self.open || self.deadline.is_some_and(|d| d <= now))
    }

    /// When to look again at a key whose grace period ends at `revoke_at` (a rollout event may come sooner).
    pub fn next_check(&self, revoke_at: Timestamp) -> Timestamp {
        match (self.open, self.deadline) {
            (true, _) | (false, None) => revoke_at,
            (false, Some(d)) => revoke_at.max(d),
        }
    }
}

/// For `Ready`'s message: the rollouts a replaced key still waits for, or `None`.
pub fn waiting_message(record: Option<&SecretRollout>, retiring: usize, timeout: Duration) -> Option<String> {
    let record = record.filter(|r| !r.complete && retiring > 0)?;
    let waiting: Vec<String> = record
        .targets
        .iter()
        .filter(|t| !t.complete)
        .map(|t| match &t.waiting_for {
            Some(why) => format!("{} ({why})", t.target()),
            None => t.target().to_string(),
        })
        .collect();
    let until = deadline(record, timeout).map(|d| format!(", at the latest until {d}")).unwrap_or_default();
    Some(format!("the replaced key is kept until the rollout of {} completes{until}", waiting.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkloadKind;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn targets() -> Vec<RolloutTarget> {
        vec![
            RolloutTarget { kind: WorkloadKind::Deployment, name: "web".into() },
            RolloutTarget { kind: WorkloadKind::StatefulSet, name: "db".into() },
        ]
    }

    fn begun(hash: &str) -> SecretRollout {
        match next(&targets(), Some(hash), SecretState::Intact, Some(&baseline("h0")), ts(100)) {
            Next::Record(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn baseline(hash: &str) -> SecretRollout {
        SecretRollout { secret_hash: hash.into(), complete: true, ..Default::default() }
    }

    #[test]
    fn no_targets_or_no_secret_yet_means_nothing_to_do() {
        assert_eq!(next(&[], Some("h"), SecretState::Intact, None, ts(0)), Next::Idle);
        assert_eq!(next(&targets(), None, SecretState::Missing, None, ts(0)), Next::Idle);
    }

    #[test]
    fn a_secret_not_as_written_is_repaired_before_anything_restarts() {
        for state in [SecretState::Missing, SecretState::Edited, SecretState::Foreign] {
            assert_eq!(next(&targets(), Some("h1"), state, Some(&baseline("h0")), ts(0)), Next::Idle);
        }
    }

    #[test]
    fn the_first_write_only_records_its_hash() {
        assert_eq!(next(&targets(), Some("h0"), SecretState::Intact, None, ts(0)), Next::Record(baseline("h0")));
        assert_eq!(next(&targets(), Some("h0"), SecretState::Intact, Some(&baseline("h0")), ts(0)), Next::Idle);
    }

    #[test]
    fn new_data_records_every_target_then_restarts_each_once() {
        let mut r = begun("h1");
        assert_eq!(r.secret_hash, "h1");
        assert_eq!(r.started_at, Some(Time(ts(100))));
        assert!(!r.complete);
        assert_eq!(r.targets.len(), 2);
        assert!(r.targets.iter().all(|t| t.restarted_at.is_none()));
        let at = |r: &SecretRollout| next(&targets(), Some("h1"), SecretState::Intact, Some(r), ts(101));
        assert_eq!(at(&r), Next::Restart(targets()[0].clone()));
        r.targets[0].restarted_at = Some(Time(ts(101)));
        assert_eq!(at(&r), Next::Restart(targets()[1].clone()));
        r.targets[1].not_found = true;
        assert_eq!(at(&r), Next::Observe, "a missing target is not restarted again");
        r.complete = true;
        assert_eq!(at(&r), Next::Idle, "a resync with the same data restarts nothing");
    }

    #[test]
    fn a_target_added_later_is_not_restarted_without_new_data() {
        let mut more = targets();
        more.push(RolloutTarget { kind: WorkloadKind::DaemonSet, name: "agent".into() });
        assert_eq!(next(&more, Some("h0"), SecretState::Intact, Some(&baseline("h0")), ts(0)), Next::Idle);
    }

    fn deploy(generation: i64, observed: i64, want: i32, updated: i32, total: i32, available: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": want, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                       "availableReplicas": available}
        }))
        .unwrap()
    }

    #[test]
    fn deployment_rollout_needs_current_generation_and_no_old_replicas() {
        assert_eq!(deployment(&deploy(2, 2, 3, 3, 3, 3)), Rollout::Complete);
        assert!(
            matches!(deployment(&deploy(3, 2, 3, 3, 3, 3)), Rollout::Waiting(w) if w.contains("observedGeneration"))
        );
        assert!(matches!(deployment(&deploy(2, 2, 3, 1, 4, 3)), Rollout::Waiting(w) if w.contains("updated 1")));
        // All updated, but a replica of an older ReplicaSet is still counted.
        assert!(matches!(deployment(&deploy(2, 2, 3, 3, 4, 3)), Rollout::Waiting(_)));
        assert!(matches!(deployment(&deploy(2, 2, 3, 3, 3, 2)), Rollout::Waiting(_)));
    }

    #[test]
    fn stateful_set_rollout_needs_the_update_revision_everywhere() {
        let sts = |current: &str, updated: i32| -> StatefulSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db", "generation": 2},
                "spec": {"replicas": 2, "selector": {}, "template": {}, "serviceName": "db"},
                "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": updated, "availableReplicas": 2,
                           "currentRevision": current, "updateRevision": "db-2"}
            }))
            .unwrap()
        };
        assert_eq!(stateful_set(&sts("db-2", 2)), Rollout::Complete);
        assert!(matches!(stateful_set(&sts("db-1", 2)), Rollout::Waiting(w) if w.contains("db-1")));
        assert!(matches!(stateful_set(&sts("db-1", 1)), Rollout::Waiting(w) if w.contains("updated 1")));
    }

    #[test]
    fn daemon_set_rollout_needs_every_node_updated_and_available() {
        let ds = |updated: i32, unavailable: i32| -> DaemonSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "agent", "generation": 1},
                "spec": {"selector": {}, "template": {}},
                "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                           "numberMisscheduled": 0, "numberReady": 2, "updatedNumberScheduled": updated,
                           "numberUnavailable": unavailable}
            }))
            .unwrap()
        };
        assert_eq!(daemon_set(&ds(2, 0)), Rollout::Complete);
        assert!(matches!(daemon_set(&ds(1, 0)), Rollout::Waiting(_)));
        assert!(matches!(daemon_set(&ds(2, 1)), Rollout::Waiting(_)));
    }

    #[test]
    fn observing_completes_the_record_or_times_it_out() {
        let mut r = begun("h1");
        for t in &mut r.targets {
            t.restarted_at = Some(Time(ts(100)));
        }
        let timeout = Duration::from_secs(60);
        let (o, late) = observed(&r, &[Rollout::Complete, Rollout::Waiting("updated 1".into())], timeout, ts(120));
        assert!(!o.complete && late.is_empty());
        assert!(o.targets[0].complete);
        assert_eq!(o.targets[1].waiting_for.as_deref(), Some("updated 1"));
        let (o, late) = observed(&r, &[Rollout::Complete, Rollout::NotFound], timeout, ts(120));
        assert!(o.complete && late.is_empty(), "a target that is gone holds nothing back");
        assert!(o.targets[1].not_found);
        let (o, late) = observed(&r, &[Rollout::Complete, Rollout::Waiting("updated 1".into())], timeout, ts(160));
        assert!(o.complete && o.timed_out);
        assert_eq!(late, vec!["StatefulSet/db: updated 1".to_owned()]);
    }

    #[test]
    fn a_replaced_key_goes_after_grace_and_rollout_or_after_the_timeout() {
        let timeout = Duration::from_secs(60);
        let mut r = begun("h1");
        // No targets, or the first write: only the grace period counts.
        assert_eq!(Gate::of(&[], Some("h1"), Some(&r), timeout), Gate::OPEN);
        assert_eq!(Gate::of(&targets(), Some("h1"), None, timeout), Gate::OPEN);
        // New data whose restarts are not recorded: closed.
        assert!(!Gate::of(&targets(), Some("h2"), Some(&r), timeout).open);
        let gate = Gate::of(&targets(), Some("h1"), Some(&r), timeout);
        assert_eq!(gate, Gate { open: false, deadline: Some(ts(160)) });
        assert!(!gate.may_revoke(ts(110), ts(120)), "grace over, rollout not complete");
        assert_eq!(gate.next_check(ts(110)), ts(160));
        assert!(gate.may_revoke(ts(110), ts(160)), "the timeout passed");
        r.complete = true;
        let gate = Gate::of(&targets(), Some("h1"), Some(&r), timeout);
        assert!(!gate.may_revoke(ts(130), ts(120)), "rollout complete, grace not over");
        assert!(gate.may_revoke(ts(130), ts(130)));
        assert_eq!(gate.next_check(ts(130)), ts(130));
    }

    #[test]
    fn ready_message_names_what_is_waited_for() {
        let mut r = begun("h1");
        r.targets[0].waiting_for = Some("updated 1".into());
        let m = waiting_message(Some(&r), 1, Duration::from_secs(60)).unwrap();
        assert!(m.contains("Deployment/web (updated 1)") && m.contains("StatefulSet/db"), "{m}");
        assert!(waiting_message(Some(&r), 0, Duration::from_secs(60)).is_none(), "nothing retiring");
        r.complete = true;
        assert!(waiting_message(Some(&r), 1, Duration::from_secs(60)).is_none());
    }
}
