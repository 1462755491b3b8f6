//! Resource versions the operator keeps so that it reads less, a few bytes per object:
//!
//! - [`OwnedSecrets`]: the version of every Secret the operator owns, from the owned-Secret watch it runs anyway.
//!   A resource records its target Secret's version with the data's keyed hash; while the watch still reports that
//!   version the Secret is unchanged and is not read again (a restart with 10,000 Ready read each one).
//! - [`Written`]: the version each resource had after the operator's last write to it. A reconcile reads the
//!   resource at least that new (see `reconcile::read_fresh`), so it never decides on a status older than its own.
//!
//! Versions are kept only when they are decimal numbers (what etcd-backed API servers give); anything else is not
//! kept, and the reader goes to the API server as before. They are compared for equality only, except in
//! [`newest`] and [`Written::seen`] (see [`newest`] for why ordering them holds).

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::Mutex,
    time::Duration,
};

use kube::runtime::watcher;

use super::cache::SecretMeta;

/// How long a reader waits for the owned-Secret watch's first list before reading the Secret instead.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(10);

/// A Kubernetes UID as its 128 bits (UIDs are UUIDs); any other string by its 64-bit hash.
pub fn uid_bits(uid: &str) -> u128 {
    let (mut bits, mut digits) = (0u128, 0);
    for c in uid.chars().filter(|c| *c != '-') {
        match c.to_digit(16) {
            Some(d) if digits < 32 => {
                bits = bits << 4 | u128::from(d);
                digits += 1;
            }
            _ => {
                digits = 0;
                break;
            }
        }
    }
    if digits == 32 {
        return bits;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    u128::from(h.finish())
}

/// A resourceVersion as a number, when it is one.
pub fn version_number(rv: Option<&str>) -> Option<u64> {
    rv?.parse().ok()
}

/// The later of two resource versions of one object, as numbers. The API conventions make versions opaque; every
/// etcd-backed API server issues them from etcd's revision, which only grows, and parses them as such itself. This
/// is used only to ask the server for a read "not older than" a version, never to skip one; a server whose versions
/// are not numbers gets a quorum read instead (`None` here).
pub fn newest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a.max(b)
}

fn name_key(name: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// Owner UID bits and version, by the hash of a Secret's name.
type Versions = HashMap<u64, (u128, u64)>;

/// The owned Secrets' versions, by namespace: name hashed → (the controller owner's UID, the version); 32 bytes a
/// Secret. A hash collision of two names is harmless: an entry answers only for its own owner UID, and two Secrets
/// never share a version.
///
/// Fed by one watch of all namespaces, or one watch per namespace (`watch`: its namespace); each watch's relist
/// replaces what that watch covers, so a Secret deleted while a watch was down drops out.
#[derive(Default)]
pub struct OwnedSecrets {
    state: Mutex<OwnedState>,
    /// The operator's own writes of Secrets, by the hash of `namespace/name`: the event of one wakes nobody
    /// ([`OwnedSecrets::is_own_write`]).
    own_writes: Mutex<OwnWrites>,
    /// A write ended.
    written: tokio::sync::Notify,
    listed: tokio::sync::Notify,
    /// A reader already waited the whole [`FIRST_LIST_WAIT`] in vain (the watch cannot list): later ones read at
    /// once instead of each waiting again.
    gave_up: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct OwnWrites {
    /// Writes under way.
    pending: HashMap<u64, usize>,
    /// The version a write left the Secret at, until the watch brings it.
    left_at: HashMap<u64, u64>,
}

/// A write of a Secret under way ([`OwnedSecrets::writing`]); dropped without [`OwnWrite::done`], it failed.
pub struct OwnWrite<'a> {
    secrets: &'a OwnedSecrets,
    key: u64,
    version: Option<u64>,
}

impl OwnWrite<'_> {
    /// The write left the Secret at `version`.
    pub fn done(mut self, version: Option<&str>) {
        self.version = version_number(version);
    }
}

impl Drop for OwnWrite<'_> {
    fn drop(&mut self) {
        let mut writes = self.secrets.own_writes.lock().expect("own Secret writes poisoned");
        if let Some(n) = writes.pending.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                writes.pending.remove(&self.key);
            }
        }
        if let Some(v) = self.version {
            writes.left_at.insert(self.key, v);
        }
        drop(writes);
        self.secrets.written.notify_waiters();
    }
}

#[derive(Default)]
struct OwnedState {
    by_namespace: HashMap<String, Versions>,
    /// Relists in progress, by watch: what each has brought so far.
    relists: HashMap<Option<String>, HashMap<String, Versions>>,
    /// The watches that have listed once.
    listed: HashSet<Option<String>>,
}

impl OwnedState {
    fn is_listed(&self, namespace: &str) -> bool {
        self.listed.contains(&None) || self.listed.contains(&Some(namespace.to_owned()))
    }
}

/// `(namespace, name hash, (owner UID bits, version))` of a Secret with a controller owner and a numeric version.
fn owned_entry(secret: &SecretMeta) -> Option<(&str, u64, (u128, u64))> {
    let m = &secret.metadata;
    let owner = m.owner_references.as_deref()?.iter().find(|r| r.controller == Some(true))?;
    let version = version_number(m.resource_version.as_deref())?;
    Some((m.namespace.as_deref()?, name_key(m.name.as_deref()?), (uid_bits(&owner.uid), version)))
}

impl OwnedSecrets {
    /// Follows one event of the owned-Secret watch of `watch` (a namespace, or `None` for all). Called before the
    /// event wakes anyone, so a reconcile woken by a Secret change sees at least that version here.
    pub fn apply(&self, watch: Option<&str>, event: &watcher::Event<SecretMeta>) {
        let mut state = self.state.lock().expect("owned-Secret versions poisoned");
        let watch = watch.map(str::to_owned);
        match event {
            watcher::Event::Init => {
                state.relists.insert(watch, HashMap::new());
            }
            watcher::Event::InitApply(s) => {
                if let (Some(relist), Some((ns, k, v))) = (state.relists.get_mut(&watch), owned_entry(s)) {
                    relist.entry(ns.to_owned()).or_default().insert(k, v);
                }
            }
            watcher::Event::InitDone => {
                let relisted = state.relists.remove(&watch).unwrap_or_default();
                match &watch {
                    None => state.by_namespace = relisted,
                    Some(ns) => {
                        let versions = relisted.into_iter().find(|(n, _)| n == ns).map(|(_, v)| v).unwrap_or_default();
                        state.by_namespace.insert(ns.clone(), versions);
                    }
                }
                state.by_namespace.retain(|_, v| !v.is_empty());
                state.by_namespace.values_mut().for_each(HashMap::shrink_to_fit);
                if state.listed.insert(watch) {
                    self.listed.notify_waiters();
                }
            }
            watcher::Event::Apply(s) => match owned_entry(s) {
                // Never back to a version older than one known (our own write's, kept by `written_by`).
                Some((ns, k, v)) => {
                    let versions = state.by_namespace.entry(ns.to_owned()).or_default();
                    versions.entry(k).and_modify(|known| newest_of(known, v)).or_insert(v);
                }
                // No longer ours (its owner reference removed by hand): forget it.
                None => forget(&mut state, s),
            },
            watcher::Event::Delete(s) => forget(&mut state, s),
        }
    }

    /// Whether the Secret `namespace/name` is owned by the resource with `owner_uid` and still at `version`, by the
    /// watch. `false` when the watch has not listed yet (after a short wait), or the version is not a number.
    pub async fn unchanged(&self, namespace: &str, name: &str, owner_uid: &str, version: &str) -> bool {
        let Some(version) = version_number(Some(version)) else { return false };
        use std::sync::atomic::Ordering::Relaxed;
        let listed = self.listed.notified();
        if !self.state.lock().expect("owned-Secret versions poisoned").is_listed(namespace)
            && !self.gave_up.load(Relaxed)
            && tokio::time::timeout(FIRST_LIST_WAIT, listed).await.is_err()
        {
            self.gave_up.store(true, Relaxed);
        }
        let state = self.state.lock().expect("owned-Secret versions poisoned");
        state.is_listed(namespace)
            && state.by_namespace.get(namespace).and_then(|v| v.get(&name_key(name)))
                == Some(&(uid_bits(owner_uid), version))
    }

    /// Our write left the Secret `namespace/name` owned by `owner_uid` at `version`: known at once, as if the
    /// watch had brought it, so that the next look at it needs no read even before the watch's event comes. A
    /// change after our write has a newer version: the watch brings it and wakes the resource.
    pub fn written_by(&self, namespace: &str, name: &str, owner_uid: &str, version: Option<&str>) {
        let Some(version) = version_number(version) else { return };
        let mut state = self.state.lock().expect("owned-Secret versions poisoned");
        if !state.is_listed(namespace) {
            return;
        }
        let entry = (uid_bits(owner_uid), version);
        let versions = state.by_namespace.entry(namespace.to_owned()).or_default();
        versions.entry(name_key(name)).and_modify(|known| newest_of(known, entry)).or_insert(entry);
    }

    /// The operator is about to write the Secret `namespace/name`: its event, if it comes before the write's
    /// answer, waits for it ([`OwnedSecrets::is_own_write`]).
    pub fn writing(&self, namespace: &str, name: &str) -> OwnWrite<'_> {
        let key = name_key(&format!("{namespace}/{name}"));
        *self.own_writes.lock().expect("own Secret writes poisoned").pending.entry(key).or_default() += 1;
        OwnWrite { secrets: self, key, version: None }
    }

    /// Whether a change of an owned Secret seen by the watch is exactly the operator's own last write of it (the
    /// reconcile that wrote it already acts on it: waking its resource again would only read it back). Each write
    /// is matched once; a later version (someone changed it after us) is never ours. An event that overtook the
    /// answer of a write under way waits for that answer (at most [`OWN_WRITE_WAIT`]).
    pub async fn is_own_write(&self, secret: &SecretMeta) -> bool {
        let m = &secret.metadata;
        let (Some(ns), Some(name), Some(version)) =
            (m.namespace.as_deref(), m.name.as_deref(), version_number(m.resource_version.as_deref()))
        else {
            return false;
        };
        let key = name_key(&format!("{ns}/{name}"));
        let deadline = tokio::time::Instant::now() + OWN_WRITE_WAIT;
        loop {
            let written = self.written.notified();
            {
                let mut writes = self.own_writes.lock().expect("own Secret writes poisoned");
                match writes.left_at.get(&key).copied() {
                    Some(ours) if ours == version => {
                        writes.left_at.remove(&key);
                        return true;
                    }
                    Some(ours) if ours > version => return false,
                    Some(_) => {
                        writes.left_at.remove(&key);
                    }
                    None => {}
                }
                if !writes.pending.contains_key(&key) {
                    return false;
                }
            }
            if tokio::time::timeout_at(deadline, written).await.is_err() {
                return false;
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap().by_namespace.values().map(HashMap::len).sum()
    }
}

/// Keeps in `known` whichever of it and `seen` (owner, version) has the newer version.
fn newest_of(known: &mut (u128, u64), seen: (u128, u64)) {
    if seen.1 >= known.1 {
        *known = seen;
    }
}

fn forget(state: &mut OwnedState, secret: &SecretMeta) {
    let m = &secret.metadata;
    let ns = m.namespace.as_deref().unwrap_or_default();
    if let Some(v) = state.by_namespace.get_mut(ns) {
        v.remove(&name_key(m.name.as_deref().unwrap_or_default()));
    }
}

/// How long the event of a Secret waits for the answer of our write under way to it.
const OWN_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Each resource's version after the operator's last write to it: UID bits → version, 24 bytes a resource.
#[derive(Default)]
pub struct Written {
    versions: Mutex<HashMap<u128, u64>>,
    /// Resources whose finalizer we are adding (the patch sent, its answer not back yet).
    adding_finalizer: Mutex<HashSet<u128>>,
    /// Resources whose reconcile under way went on to a vendor create on the intent their finalizer's patch carried
    /// (`intent::record`): what that reconcile's failure records must keep it.
    creating_on_first_intent: Mutex<HashSet<u128>>,
}

impl Written {
    /// The reconcile of `uid` under way creates on its first intent (`true`), or has ended (`false`); returns
    /// whether it did.
    pub fn creating_on_first_intent(&self, uid: &str, creating: bool) -> bool {
        let mut set = self.creating_on_first_intent.lock().expect("first intents poisoned");
        if creating { !set.insert(uid_bits(uid)) } else { set.remove(&uid_bits(uid)) }
    }

    /// We are adding our finalizer to the resource `uid` (`false`: done, or failed).
    pub fn adding_finalizer(&self, uid: &str, adding: bool) {
        let mut set = self.adding_finalizer.lock().expect("finalizer adds poisoned");
        if adding {
            set.insert(uid_bits(uid));
        } else {
            set.remove(&uid_bits(uid));
        }
    }

    /// Whether the watch's resource `uid` at `version` is our own last write: its version is the one our write
    /// returned, or it is the first to show the finalizer we are adding before the patch's answer came back
    /// (`has_finalizer`; the watch brings versions in order, so a later change by someone else is never taken).
    pub fn is_ours(&self, uid: &str, version: Option<&str>, has_finalizer: bool) -> bool {
        let exact = self.seen(uid, version);
        exact
            || (has_finalizer && self.adding_finalizer.lock().expect("finalizer adds poisoned").remove(&uid_bits(uid)))
    }

    pub fn record(&self, uid: &str, version: Option<&str>) {
        let mut map = self.versions.lock().expect("written versions poisoned");
        match version_number(version) {
            Some(v) => map.insert(uid_bits(uid), v),
            None => map.remove(&uid_bits(uid)),
        };
    }

    pub fn get(&self, uid: &str) -> Option<u64> {
        self.versions.lock().expect("written versions poisoned").get(&uid_bits(uid)).copied()
    }

    /// The watch brought the resource at `version`: once that is the recorded version or a later one, the cached
    /// copy is as new, and the entry goes (so the map holds only the resources written since the watch last
    /// caught up, not every resource). Returns whether `version` is exactly our last write's: the change is ours.
    pub fn seen(&self, uid: &str, version: Option<&str>) -> bool {
        let Some(seen) = version_number(version) else { return false };
        let mut map = self.versions.lock().expect("written versions poisoned");
        let key = uid_bits(uid);
        let written = map.get(&key).copied();
        if written.is_some_and(|written| written <= seen) {
            map.remove(&key);
        }
        if map.is_empty() && map.capacity() > 1024 {
            map.shrink_to_fit();
        }
        written == Some(seen)
    }

    /// The resource is gone: nothing left to read.
    pub fn forget(&self, uid: &str) {
        self.versions.lock().expect("written versions poisoned").remove(&uid_bits(uid));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::watcher::Event;

    use super::*;

    const OWNER: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const OTHER: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    fn secret(name: &str, owner: Option<&str>, rv: &str) -> SecretMeta {
        let mut s = SecretMeta::default();
        s.metadata.namespace = Some("ns".into());
        s.metadata.name = Some(name.into());
        s.metadata.resource_version = Some(rv.into());
        s.metadata.owner_references =
            owner.map(|uid| vec![OwnerReference { uid: uid.into(), controller: Some(true), ..Default::default() }]);
        s
    }

    fn unchanged(o: &OwnedSecrets, name: &str, owner: &str, rv: &str) -> bool {
        futures::executor::block_on(o.unchanged("ns", name, owner, rv))
    }

    #[test]
    fn an_owned_secret_is_unchanged_only_at_its_version_and_for_its_owner() {
        let o = OwnedSecrets::default();
        o.apply(None, &Event::Init);
        o.apply(None, &Event::InitApply(secret("a", Some(OWNER), "10")));
        o.apply(None, &Event::InitApply(secret("foreign", None, "11")));
        o.apply(None, &Event::InitDone);
        assert!(unchanged(&o, "a", OWNER, "10"));
        assert!(!unchanged(&o, "a", OWNER, "9"), "another version");
        assert!(!unchanged(&o, "a", OTHER, "10"), "another owner");
        assert!(!unchanged(&o, "foreign", OWNER, "11"), "no controller owner: not kept");
        assert!(!unchanged(&o, "a", OWNER, "x10"), "not a number");
        // Edited, then deleted.
        o.apply(None, &Event::Apply(secret("a", Some(OWNER), "12")));
        assert!(!unchanged(&o, "a", OWNER, "10"));
        assert!(unchanged(&o, "a", OWNER, "12"));
        o.apply(None, &Event::Delete(secret("a", Some(OWNER), "13")));
        assert!(!unchanged(&o, "a", OWNER, "12"));
        // Its owner reference removed by hand.
        o.apply(None, &Event::Apply(secret("b", Some(OWNER), "14")));
        o.apply(None, &Event::Apply(secret("b", None, "15")));
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn our_own_write_is_known_before_its_event_and_older_events_do_not_undo_it() {
        let o = OwnedSecrets::default();
        // Not kept before the watch has listed (its list replaces everything anyway).
        o.written_by("ns", "b", OWNER, Some("9"));
        o.apply(None, &Event::Init);
        o.apply(None, &Event::InitApply(secret("a", Some(OWNER), "10")));
        o.apply(None, &Event::InitDone);
        assert!(!unchanged(&o, "b", OWNER, "9"));
        o.written_by("ns", "a", OWNER, Some("20"));
        assert!(unchanged(&o, "a", OWNER, "20"), "our write, before the watch brings it");
        o.apply(None, &Event::Apply(secret("a", Some(OWNER), "15")));
        assert!(unchanged(&o, "a", OWNER, "20"), "an event older than our write changes nothing");
        o.apply(None, &Event::Apply(secret("a", Some(OWNER), "21")));
        assert!(!unchanged(&o, "a", OWNER, "20"), "a change after our write");
        o.written_by("ns", "a", OWNER, Some("18"));
        assert!(unchanged(&o, "a", OWNER, "21"), "an older write's answer does not undo a newer version");
        o.written_by("ns", "new", OWNER, Some("30"));
        assert!(unchanged(&o, "new", OWNER, "30"), "a Secret we just created");
    }

    #[test]
    fn a_relist_drops_what_was_deleted_while_the_watch_was_down() {
        let o = OwnedSecrets::default();
        o.apply(None, &Event::Init);
        o.apply(None, &Event::InitApply(secret("a", Some(OWNER), "10")));
        o.apply(None, &Event::InitApply(secret("b", Some(OWNER), "11")));
        o.apply(None, &Event::InitDone);
        o.apply(None, &Event::Init);
        // Until the relist is done the entries known stand.
        assert!(unchanged(&o, "b", OWNER, "11"));
        o.apply(None, &Event::InitApply(secret("a", Some(OWNER), "10")));
        o.apply(None, &Event::InitDone);
        assert!(unchanged(&o, "a", OWNER, "10"));
        assert!(!unchanged(&o, "b", OWNER, "11"));
    }

    #[test]
    fn a_watch_of_one_namespace_relists_that_namespace_only() {
        let o = OwnedSecrets::default();
        let mut other = secret("b", Some(OWNER), "20");
        other.metadata.namespace = Some("other".into());
        for (watch, s) in [("ns", secret("a", Some(OWNER), "10")), ("other", other)] {
            o.apply(Some(watch), &Event::Init);
            o.apply(Some(watch), &Event::InitApply(s));
            o.apply(Some(watch), &Event::InitDone);
        }
        // `ns` relists empty (its Secret deleted while the watch was down); `other` keeps its own.
        o.apply(Some("ns"), &Event::Init);
        o.apply(Some("ns"), &Event::InitDone);
        assert!(!unchanged(&o, "a", OWNER, "10"));
        assert!(futures::executor::block_on(o.unchanged("other", "b", OWNER, "20")));
    }

    #[tokio::test]
    async fn a_reader_before_the_first_list_waits_for_it() {
        let o = std::sync::Arc::new(OwnedSecrets::default());
        let reader = tokio::spawn({
            let o = o.clone();
            async move { o.unchanged("ns", "a", OWNER, "10").await }
        });
        tokio::task::yield_now().await;
        o.apply(None, &Event::Init);
        o.apply(None, &Event::InitApply(secret("a", Some(OWNER), "10")));
        assert!(!reader.is_finished(), "answers only once the list is done");
        o.apply(None, &Event::InitDone);
        assert!(reader.await.unwrap());
    }

    #[test]
    fn written_versions_are_kept_per_uid_and_the_newest_is_asked_for() {
        let w = Written::default();
        w.record(OWNER, Some("42"));
        assert_eq!(w.get(OWNER), Some(42));
        assert_eq!(w.get(OTHER), None);
        w.record(OWNER, Some("not-a-number"));
        assert_eq!(w.get(OWNER), None, "a version that is not a number is not kept");
        w.record(OWNER, Some("43"));
        w.forget(OWNER);
        assert_eq!(w.get(OWNER), None);
        // Kept until the watch brings that version or a later one.
        w.record(OWNER, Some("50"));
        w.seen(OWNER, Some("49"));
        assert_eq!(w.get(OWNER), Some(50));
        w.seen(OWNER, Some("50"));
        assert_eq!(w.get(OWNER), None);
        assert_eq!(newest(Some(7), Some(42)), Some(42));
        assert_eq!(newest(None, Some(42)), Some(42));
        assert_eq!(newest(None, None), None);
    }

    #[test]
    fn uid_bits_are_the_uuid_or_a_hash() {
        assert_eq!(uid_bits(OWNER), 0x0f8fad5bd9cb469fa16570867728950e);
        assert_ne!(uid_bits("0f8fad5b-d9cb-469f-a165-70867728950"), uid_bits("0f8fad5b-d9cb-469f-a165-7086772895"));
        assert!(uid_bits("zz") <= u128::from(u64::MAX), "not hex: hashed");
    }
}
