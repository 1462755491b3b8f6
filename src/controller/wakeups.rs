//! The far wake-ups of resources at rest (a renewal days ahead, a verification, the hourly safety resync): one
//! compact heap per kind of (instant, UID), about 60 bytes a resource, instead of the controller runtime's queue,
//! which keeps each scheduled object's name, namespace, UID and version twice (in its map and in its timer) and
//! was several hundred bytes a resource at 10,000 Ready. Short requeues (backoff, rollout polls) stay with the
//! runtime: few resources have one at a time.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::Stream;

use super::versions::uid_bits;

/// Requeues at least this far ahead go to the heap (the rotations and verifications of the integration tests,
/// 10 to 20 s ahead, take this path too).
pub const FAR: Duration = Duration::from_secs(10);

/// One kind's wake-ups.
///
/// Also the resources that failed because a vendor endpoint was not answering: they wake when an endpoint answers
/// again ([`Wakeups::wake_outage_waiters`]) instead of at the end of a backoff of up to 5 minutes.
#[derive(Default)]
pub struct Wakeups {
    inner: Mutex<Inner>,
    changed: tokio::sync::Notify,
    /// UID bits of the resources whose last reconcile failed for a vendor outage.
    outage_waiters: Mutex<HashSet<u128>>,
}

#[derive(Default)]
struct Inner {
    /// (instant in ms since the epoch, UID bits); an entry superseded by a later `at` stays until it is reached
    /// (or the heap is rebuilt) and is then dropped.
    heap: BinaryHeap<Reverse<(u64, u128)>>,
    /// UID bits → the instant that counts.
    due: HashMap<u128, u64>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Wakeups {
    /// Wake the resource `uid` at `when` (replacing any earlier request).
    pub fn at(&self, uid: &str, when: SystemTime) {
        self.at_key(uid_bits(uid), when);
    }

    /// The resource `uid` failed because a vendor endpoint did not answer: wake it when one answers again.
    pub fn wait_for_outage(&self, uid: &str) {
        self.outage_waiters.lock().expect("outage waiters poisoned").insert(uid_bits(uid));
    }

    /// The resource `uid` no longer waits for an outage to end (it reconciled, or is gone).
    pub fn outage_over_for(&self, uid: &str) {
        let mut waiters = self.outage_waiters.lock().expect("outage waiters poisoned");
        if !waiters.is_empty() {
            waiters.remove(&uid_bits(uid));
        }
    }

    /// A vendor endpoint answers again: wake every resource that failed for an outage now. Returns how many.
    pub fn wake_outage_waiters(&self) -> usize {
        let waiters = std::mem::take(&mut *self.outage_waiters.lock().expect("outage waiters poisoned"));
        let now = SystemTime::now();
        for key in &waiters {
            self.at_key(*key, now);
        }
        waiters.len()
    }

    fn at_key(&self, key: u128, when: SystemTime) {
        let at = millis(when);
        let mut inner = self.inner.lock().expect("wake-ups poisoned");
        let earliest = inner.heap.peek().map(|Reverse((t, _))| *t);
        inner.due.insert(key, at);
        inner.heap.push(Reverse((at, key)));
        // Superseded entries pile up with each reconcile of a resource: rebuilt from `due` past twice its size.
        if inner.heap.len() > 2 * inner.due.len() + 1024 {
            let rebuilt: BinaryHeap<_> = inner.due.iter().map(|(k, t)| Reverse((*t, *k))).collect();
            inner.heap = rebuilt;
        }
        drop(inner);
        if earliest.is_none_or(|e| at < e) {
            self.changed.notify_one();
        }
    }

    /// The resource is gone (or no longer waits).
    pub fn cancel(&self, uid: &str) {
        self.inner.lock().expect("wake-ups poisoned").due.remove(&uid_bits(uid));
    }

    /// The UIDs due at `now` (removed), and when the next one is due.
    fn take_due(&self, now: u64) -> (Vec<u128>, Option<u64>) {
        let mut inner = self.inner.lock().expect("wake-ups poisoned");
        let mut due = Vec::new();
        while let Some(Reverse((at, key))) = inner.heap.peek().copied() {
            if at > now {
                return (due, Some(at));
            }
            inner.heap.pop();
            if inner.due.get(&key) == Some(&at) {
                inner.due.remove(&key);
                due.push(key);
            }
        }
        if inner.heap.capacity() > 1024 && inner.heap.capacity() > 4 * inner.heap.len() {
            inner.heap.shrink_to_fit();
        }
        (due, None)
    }

    /// The UIDs as they fall due, in batches.
    pub fn due(self: Arc<Self>) -> impl Stream<Item = Vec<u128>> + Send + 'static {
        futures::stream::unfold(self, |w| async move {
            loop {
                let due = {
                    let changed = w.changed.notified();
                    let (due, next) = w.take_due(millis(SystemTime::now()));
                    if due.is_empty() {
                        match next {
                            Some(at) => {
                                let wait = Duration::from_millis(at.saturating_sub(millis(SystemTime::now())));
                                tokio::select! {
                                    () = tokio::time::sleep(wait) => {}
                                    () = changed => {}
                                }
                            }
                            None => changed.await,
                        }
                    }
                    due
                };
                if !due.is_empty() {
                    return Some((due, w));
                }
            }
        })
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.inner.lock().unwrap().due.len()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    const A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    const C: &str = "16fd2706-8baf-433b-82eb-8c7fada847da";

    #[tokio::test]
    async fn resources_wake_in_order_once_at_their_latest_instant() {
        let w = Arc::new(Wakeups::default());
        let now = SystemTime::now();
        w.at(A, now + Duration::from_millis(300));
        w.at(B, now + Duration::from_millis(100));
        // A later request replaces an earlier one; a cancelled one never fires.
        w.at(B, now + Duration::from_millis(200));
        w.at(C, now + Duration::from_millis(50));
        w.cancel(C);
        let mut due = w.clone().due().boxed();
        assert_eq!(due.next().await.unwrap(), vec![uid_bits(B)]);
        assert!(SystemTime::now() >= now + Duration::from_millis(200), "not before its instant");
        assert_eq!(due.next().await.unwrap(), vec![uid_bits(A)]);
        assert_eq!(w.pending(), 0);
        // An earlier request made while waiting is not held up by the later one.
        w.at(A, SystemTime::now() + Duration::from_secs(3600));
        let waiter = tokio::spawn(async move { due.next().await.unwrap() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.at(B, SystemTime::now() + Duration::from_millis(10));
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken early").unwrap();
        assert_eq!(got, vec![uid_bits(B)]);
    }

    #[tokio::test]
    async fn outage_waiters_wake_together_once() {
        let w = Arc::new(Wakeups::default());
        w.wait_for_outage(A);
        w.wait_for_outage(B);
        w.wait_for_outage(C);
        w.outage_over_for(C);
        // A far wake-up of A is brought forward.
        w.at(A, SystemTime::now() + Duration::from_secs(3600));
        assert_eq!(w.wake_outage_waiters(), 2);
        let mut due = w.clone().due().boxed();
        let mut woken = tokio::time::timeout(Duration::from_secs(5), due.next()).await.expect("at once").unwrap();
        woken.sort();
        let mut want = vec![uid_bits(A), uid_bits(B)];
        want.sort();
        assert_eq!(woken, want);
        assert_eq!(w.wake_outage_waiters(), 0, "each wait is woken once");
    }

    #[test]
    fn superseded_entries_do_not_pile_up() {
        let w = Wakeups::default();
        let later = SystemTime::now() + Duration::from_secs(3600);
        for i in 0..10_000u64 {
            w.at(A, later + Duration::from_millis(i));
        }
        let inner = w.inner.lock().unwrap();
        assert_eq!(inner.due.len(), 1);
        assert!(inner.heap.len() <= 1024 + 3, "heap rebuilt: {}", inner.heap.len());
    }
}
