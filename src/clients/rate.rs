//! Client-side rate limits of the vendor endpoints, shared fairly between the requesters that use them.
//!
//! One [`RateLimiter`] per endpoint (GCRA, from `governor`) admits at most the configured requests in any 60 s
//! window. A request that cannot go at once waits in line, and the line is served round robin across the
//! requesters with a request waiting (namespaces, for the operator): a requester with a thousand requests queued
//! delays another's next request by at most one request of each requester ahead of it, never by its whole queue.
//! Who a request is made for rides along in a task-local ([`Requester::run`]), so the clients take no extra
//! argument and this module knows nothing of Kubernetes.
//!
//! Fairness here is not enough on its own: the caller that starts work (the operator's reconcile frame) must not
//! let one requester's waiting work take every worker it has. [`RateLimiters::backlog`] says how much of it has had
//! to wait and is still running, so the caller can turn away more of the same before it starts.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use governor::{
    Quota,
    clock::Clock,
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};
use tokio::sync::Notify;

use super::outage::Reachability;

/// Client-side default: under the Deep Security Manager default of 500 requests per minute per key.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 400;

/// `governor`'s clock on tokio's time: a paused test runtime drives the budget as it drives the sleeps.
#[derive(Debug, Clone)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type Budget = governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// A client-side rate limit for one vendor endpoint. Calls wait for a slot, in turn by requester (module doc).
pub struct RateLimiter {
    per_minute: u32,
    /// Whether the endpoint answers at all.
    pub reach: Arc<Reachability>,
    budget: Budget,
    clock: TokioClock,
    line: Mutex<Line>,
}

impl RateLimiter {
    /// A limiter admitting at most `per_minute` requests in any 60 s window: a small burst (1/10 of the budget, so a
    /// handful of calls is not serialised) plus the rest spread evenly. GCRA admits `burst + rate × window` in a
    /// window, so the steady rate is the budget minus the burst.
    pub fn per_minute(per_minute: u32) -> Arc<Self> {
        Self::with_reach(per_minute, Arc::new(Reachability::new(Arc::new(tokio::sync::watch::Sender::new(0)))))
    }

    /// [`Self::per_minute`], for an endpoint whose reachability is `reach`.
    fn with_reach(per_minute: u32, reach: Arc<Reachability>) -> Arc<Self> {
        let per_minute = per_minute.max(1);
        let clock = TokioClock { origin: tokio::time::Instant::now() };
        let budget = governor::RateLimiter::direct_with_clock(quota(per_minute), clock.clone());
        Arc::new(Self { per_minute, reach, budget, clock, line: Mutex::default() })
    }

    pub fn limit_per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Waits until a request may be sent: at once when nobody is waiting and the budget allows it, otherwise in
    /// turn. Only the request at the head of the line takes from the budget, and only when it goes: a waiter that
    /// is dropped (its reconcile cancelled) leaves the line without using a request of the budget.
    pub async fn acquire(&self) {
        let requester = Requester::current();
        let (id, wake) = {
            let mut line = self.line();
            if line.is_empty() && self.budget.check().is_ok() {
                return;
            }
            line.join(requester.as_ref().map_or_else(|| Arc::from(""), |r| r.tenant.clone()))
        };
        if let Some(r) = &requester {
            r.waited();
        }
        let mut place = Place { limiter: self, id, served: false };
        loop {
            let wait = {
                let mut line = self.line();
                if line.head() != Some(id) {
                    None
                } else {
                    match self.budget.check() {
                        Ok(()) => {
                            if let Some(next) = line.serve() {
                                next.notify_one();
                            }
                            place.served = true;
                            return;
                        }
                        Err(not_until) => Some(not_until.wait_time_from(self.clock.now())),
                    }
                }
            };
            match wait {
                // At the head: until the budget has room (nothing else can take it: everyone else waits in line).
                Some(d) => tokio::time::sleep(d).await,
                // Until this waiter comes to the head.
                None => wake.notified().await,
            }
        }
    }

    fn line(&self) -> std::sync::MutexGuard<'_, Line> {
        self.line.lock().expect("rate limiter line poisoned")
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.line().len()
    }
}

/// A waiter's place in line; leaving it (the request cancelled) lets the next one move up.
struct Place<'a> {
    limiter: &'a RateLimiter,
    id: u64,
    served: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.served
            && let Some(next) = self.limiter.line().leave(self.id)
        {
            next.notify_one();
        }
    }
}

/// The requests waiting for one endpoint's budget, served round robin by requester. Holds only requesters with a
/// waiter: one whose last waiter is served or gone is removed, so its size is the number of waiting requests.
#[derive(Default)]
struct Line {
    /// Requesters with a waiter, in the order they are served: the first one's first waiter is the head.
    turns: VecDeque<Arc<str>>,
    waiters: HashMap<Arc<str>, VecDeque<Waiter>>,
    /// Which requester each waiter belongs to.
    tenant_of: HashMap<u64, Arc<str>>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    wake: Arc<Notify>,
}

impl Line {
    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    fn len(&self) -> usize {
        self.tenant_of.len()
    }

    /// A new waiter of `tenant`, last of its requester's; a requester with no waiter yet takes the last turn.
    fn join(&mut self, tenant: Arc<str>) -> (u64, Arc<Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let wake = Arc::new(Notify::new());
        let queue = self.waiters.entry(tenant.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(tenant.clone());
        }
        queue.push_back(Waiter { id, wake: wake.clone() });
        self.tenant_of.insert(id, tenant);
        (id, wake)
    }

    fn head(&self) -> Option<u64> {
        self.head_waiter().map(|w| w.id)
    }

    fn head_waiter(&self) -> Option<&Waiter> {
        self.waiters.get(self.turns.front()?)?.front()
    }

    /// The head went: its requester takes the last turn if it has more waiting. Returns the new head's wake-up.
    fn serve(&mut self) -> Option<Arc<Notify>> {
        let tenant = self.turns.pop_front()?;
        if let Some(queue) = self.waiters.get_mut(&tenant)
            && let Some(served) = queue.pop_front()
        {
            self.tenant_of.remove(&served.id);
            if queue.is_empty() {
                self.waiters.remove(&tenant);
            } else {
                self.turns.push_back(tenant);
            }
        }
        self.head_waiter().map(|w| w.wake.clone())
    }

    /// Waiter `id` gave up. Returns the new head's wake-up when it was the head.
    fn leave(&mut self, id: u64) -> Option<Arc<Notify>> {
        let was_head = self.head() == Some(id);
        let tenant = self.tenant_of.remove(&id)?;
        if let Some(queue) = self.waiters.get_mut(&tenant) {
            queue.retain(|w| w.id != id);
            if queue.is_empty() {
                self.waiters.remove(&tenant);
                self.turns.retain(|t| *t != tenant);
            }
        }
        if was_head { self.head_waiter().map(|w| w.wake.clone()) } else { None }
    }
}

/// The GCRA quota behind [`RateLimiter::per_minute`].
fn quota(per_minute: u32) -> Quota {
    let burst = (per_minute / 10).max(1);
    let steady = per_minute.saturating_sub(burst).max(1);
    Quota::with_period(std::time::Duration::from_secs(60) / steady)
        .expect("a non-zero period")
        .allow_burst(NonZeroU32::new(burst).expect("non-zero"))
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("per_minute", &self.per_minute).finish()
    }
}

tokio::task_local! {
    static REQUESTER: Arc<Requester>;
}

/// Who the vendor requests of a piece of work are made for: the requester whose turn they wait for in every
/// endpoint's line, and the backlog that counts the work once it has had to wait (see [`RateLimiters::backlog`]).
pub struct Requester {
    tenant: Arc<str>,
    backlog: Option<(Arc<Backlog>, Arc<str>)>,
    /// Counted in the backlog: the work has waited in some line.
    counted: AtomicBool,
}

impl Requester {
    /// Requests made for `tenant`, not counted in any backlog.
    pub fn new(tenant: &str) -> Self {
        Self { tenant: Arc::from(tenant), backlog: None, counted: AtomicBool::new(false) }
    }

    /// Runs `work` with every vendor request it makes (in this task) made for this requester. Once one of them has
    /// had to wait, the work counts in its backlog until it ends (or is dropped).
    pub async fn run<F: Future>(self, work: F) -> F::Output {
        REQUESTER.scope(Arc::new(self), work).await
    }

    fn current() -> Option<Arc<Requester>> {
        REQUESTER.try_with(Arc::clone).ok()
    }

    fn waited(&self) {
        if let Some((backlog, key)) = &self.backlog
            && !self.counted.swap(true, Ordering::AcqRel)
        {
            backlog.add(key);
        }
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        if let Some((backlog, key)) = &self.backlog
            && *self.counted.get_mut()
        {
            backlog.remove(key);
        }
    }
}

/// Per key, the pieces of work that have had to wait for a vendor budget and are still running. Keys at zero are
/// removed: the map holds at most one entry per running piece of work.
#[derive(Debug, Default)]
struct Backlog(Mutex<HashMap<Arc<str>, usize>>);

impl Backlog {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.0.lock().expect("backlog poisoned")
    }

    fn add(&self, key: &Arc<str>) {
        *self.map().entry(key.clone()).or_default() += 1;
    }

    fn remove(&self, key: &Arc<str>) {
        let mut map = self.map();
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
    }

    fn get(&self, key: &str) -> usize {
        self.map().get(key).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

/// One limiter per vendor endpoint (base URL), shared by every client talking to it, and the backlog of the work
/// that waited for them.
#[derive(Debug, Clone)]
pub struct RateLimiters {
    per_minute: u32,
    by_endpoint: Arc<Mutex<HashMap<String, Arc<RateLimiter>>>>,
    backlog: Arc<Backlog>,
    /// Whether each origin (`https://host:port`) answers: an endpoint's host that does not answer does not answer
    /// for any of its APIs either ([`super::outage`]).
    reach_by_origin: Arc<Mutex<HashMap<String, Arc<Reachability>>>>,
    /// How many times an origin that was out answered again.
    recoveries: Arc<tokio::sync::watch::Sender<u64>>,
}

impl RateLimiters {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            by_endpoint: Arc::default(),
            backlog: Arc::default(),
            reach_by_origin: Arc::default(),
            recoveries: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    pub fn for_endpoint(&self, endpoint: &str) -> Arc<RateLimiter> {
        let mut map = self.by_endpoint.lock().expect("rate limiter map poisoned");
        map.entry(endpoint.trim_end_matches('/').to_owned())
            .or_insert_with(|| RateLimiter::with_reach(self.per_minute, self.reach_of(endpoint)))
            .clone()
    }

    /// The reachability of `endpoint`'s origin.
    fn reach_of(&self, endpoint: &str) -> Arc<Reachability> {
        let origin = url::Url::parse(endpoint)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| endpoint.trim_end_matches('/').to_owned());
        let mut map = self.reach_by_origin.lock().expect("reachability map poisoned");
        map.entry(origin).or_insert_with(|| Arc::new(Reachability::new(self.recoveries.clone()))).clone()
    }

    /// Changes each time one of the endpoints that was out answers again.
    pub fn recoveries(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recoveries.subscribe()
    }

    /// A requester for `tenant` whose work, once it has waited for a budget, counts in the backlog of `key`.
    pub fn requester(&self, tenant: &str, key: &str) -> Requester {
        Requester {
            tenant: Arc::from(tenant),
            backlog: Some((self.backlog.clone(), Arc::from(key))),
            counted: AtomicBool::new(false),
        }
    }

    /// How many pieces of work under `key` have had to wait for a vendor budget and are still running.
    pub fn backlog(&self, key: &str) -> usize {
        self.backlog.get(key)
    }
}

impl Default for RateLimiters {
    fn default() -> Self {
        Self::new(DEFAULT_REQUESTS_PER_MINUTE)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[test]
    fn same_endpoint_shares_a_limiter() {
        let l = RateLimiters::new(60);
        let a = l.for_endpoint("https://dsm:4119/api");
        let b = l.for_endpoint("https://dsm:4119/api/");
        let c = l.for_endpoint("https://other:4119/api");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(a.limit_per_minute(), 60);
        // Two APIs of one host: their own budgets, one reachability.
        let v1 = l.for_endpoint("https://dsm:4119/v3.0");
        assert!(!Arc::ptr_eq(&a, &v1));
        assert!(Arc::ptr_eq(&a.reach, &v1.reach));
        assert!(!Arc::ptr_eq(&a.reach, &c.reach));
    }

    /// The most of `sorted` (ms) in any half-open window of `window` ms.
    fn max_in_window(sorted: &[u64], window: u64) -> usize {
        sorted
            .iter()
            .enumerate()
            .map(|(i, &t)| sorted[i..].iter().take_while(|&&u| u < t + window).count())
            .max()
            .unwrap()
    }

    #[test]
    fn no_sixty_second_window_exceeds_the_budget() {
        // Drive the quota with a fake clock: admit whenever allowed, for five minutes, then slide a 60 s window.
        for per_minute in [60u32, 400] {
            let clock = governor::clock::FakeRelativeClock::default();
            let limiter = governor::RateLimiter::direct_with_clock(quota(per_minute), clock.clone());
            let step = std::time::Duration::from_millis(10);
            let mut admitted = Vec::new();
            for i in 0..30_000u64 {
                while limiter.check().is_ok() {
                    admitted.push(i * 10);
                }
                clock.advance(step);
            }
            let max_in_window = max_in_window(&admitted, 60_000);
            assert!(max_in_window <= per_minute as usize, "{max_in_window} requests in one 60 s window");
            assert!(max_in_window >= (per_minute - 2) as usize, "the budget is used: {max_in_window}");
            assert_eq!(RateLimiter::per_minute(per_minute).limit_per_minute(), per_minute);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_is_admitted_then_paced() {
        let l = RateLimiter::per_minute(600); // 10/s, burst 60
        let start = Instant::now();
        for _ in 0..60 {
            l.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");
        l.acquire().await;
        let paced = start.elapsed();
        assert!(paced > Duration::from_millis(100) && paced < Duration::from_millis(120), "then paced: {paced:?}");
    }

    /// Starts `n` requests for `tenant` now (each its own task, as reconciles are); each reports when it went.
    fn requests(
        limiter: &Arc<RateLimiter>,
        tenant: &str,
        n: usize,
        log: &Arc<Mutex<Vec<(String, Instant)>>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let (limiter, log, tenant) = (limiter.clone(), log.clone(), tenant.to_owned());
                tokio::spawn(Requester::new(&tenant).run(async move {
                    limiter.acquire().await;
                    log.lock().unwrap().push((tenant, Instant::now()));
                }))
            })
            .collect()
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_requesters_take_turns() {
        // 60/min: a burst of 6, then one every 60/54 s.
        let limiter = RateLimiter::per_minute(60);
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = requests(&limiter, "a", 300, &log);
        settle().await;
        assert_eq!(log.lock().unwrap().len(), 6, "the burst went at once");
        assert_eq!(limiter.waiting(), 294);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let b_joined = Instant::now();
        tasks.extend(requests(&limiter, "b", 3, &log));
        tokio::time::sleep(Duration::from_secs(20)).await;
        let went: Vec<(String, Instant)> = log.lock().unwrap().clone();
        let order: String = went.iter().map(|(t, _)| t.as_str()).collect();
        // b's first request goes right after a's current head, then the two alternate while b has any.
        let from_b = order.find('b').expect("b went");
        assert_eq!(&order[from_b - 1..from_b + 6], "abababa", "{order}");
        let b_first = went.iter().find(|(t, _)| t == "b").unwrap().1;
        assert!(b_first - b_joined <= Duration::from_millis(2300), "b waited {:?}", b_first - b_joined);
        // Everything still within the budget: per-minute spacing after the burst.
        for pair in went[6..].windows(2) {
            let gap = pair[1].1 - pair[0].1;
            assert!(gap >= Duration::from_millis(1110), "{gap:?} between two requests");
        }
        for t in tasks {
            t.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_requester_alone_gets_the_whole_budget() {
        let limiter = RateLimiter::per_minute(60);
        let log = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let tasks = requests(&limiter, "a", 66, &log);
        for t in tasks {
            t.await.unwrap();
        }
        // 6 at once, then 60 more at 54 a minute.
        let took = start.elapsed();
        let expected = Duration::from_secs(60) / 54 * 60;
        assert!(took >= expected && took < expected + Duration::from_millis(100), "{took:?}");
        let stamps: Vec<u64> = log.lock().unwrap().iter().map(|(_, at)| (*at - start).as_millis() as u64).collect();
        let most = max_in_window(&stamps, 60_000);
        assert!((58..=60).contains(&most), "{most} in one 60 s window");
        assert_eq!(limiter.waiting(), 0);
        assert!(limiter.line().waiters.is_empty() && limiter.line().tenant_of.is_empty(), "nothing kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_without_taking_a_request() {
        let limiter = RateLimiter::per_minute(60);
        let log = Arc::new(Mutex::new(Vec::new()));
        let burst = requests(&limiter, "a", 6, &log);
        settle().await;
        // The head and one behind it give up; the third waiter gets the very next slot.
        let gone =
            requests(&limiter, "a", 1, &log).into_iter().chain(requests(&limiter, "b", 1, &log)).collect::<Vec<_>>();
        let start = Instant::now();
        let stays = requests(&limiter, "c", 1, &log);
        settle().await;
        assert_eq!(limiter.waiting(), 3);
        for t in &gone {
            t.abort();
        }
        settle().await;
        assert_eq!(limiter.waiting(), 1, "the cancelled ones left the line");
        assert_eq!(limiter.line().turns.len(), 1, "and their requesters with them");
        for t in stays {
            t.await.unwrap();
        }
        let took = start.elapsed();
        assert!(took <= Duration::from_millis(1112), "the first slot after the burst: {took:?}");
        assert_eq!(log.lock().unwrap().iter().filter(|(t, _)| t != "a").count(), 1, "only c went");
        drop(burst);
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_waited_counts_in_its_backlog_until_it_ends() {
        let limiters = RateLimiters::new(60);
        let limiter = limiters.for_endpoint("https://dsm/api");
        // Within the burst nothing waits: nothing counts.
        for _ in 0..6 {
            let l = limiter.clone();
            limiters.requester("a", "wak/a/p").run(async move { l.acquire().await }).await;
        }
        assert_eq!(limiters.backlog("wak/a/p"), 0);
        let running: Vec<_> = (0..3)
            .map(|_| {
                let l = limiter.clone();
                let requester = limiters.requester("a", "wak/a/p");
                tokio::spawn(requester.run(async move {
                    l.acquire().await;
                    l.acquire().await;
                    // Still running after its requests: still counted.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }))
            })
            .collect();
        settle().await;
        assert_eq!(limiters.backlog("wak/a/p"), 3);
        assert_eq!(limiters.backlog("wak/b/p"), 0);
        running[0].abort();
        settle().await;
        assert_eq!(limiters.backlog("wak/a/p"), 2, "a cancelled one no longer counts");
        for t in running.into_iter().skip(1) {
            t.await.unwrap();
        }
        assert_eq!(limiters.backlog("wak/a/p"), 0);
        assert_eq!(limiters.backlog.len(), 0, "keys at zero are removed");
    }

    #[test]
    fn the_line_serves_round_robin_and_keeps_only_requesters_with_waiters() {
        let mut line = Line::default();
        let a1 = line.join("a".into()).0;
        let a2 = line.join("a".into()).0;
        let a3 = line.join("a".into()).0;
        let b1 = line.join("b".into()).0;
        let c1 = line.join("c".into()).0;
        let b2 = line.join("b".into()).0;
        let mut order = vec![line.head().unwrap()];
        while line.serve().is_some() {
            order.push(line.head().unwrap());
        }
        assert_eq!(order, vec![a1, b1, c1, a2, b2, a3]);
        assert!(line.is_empty() && line.waiters.is_empty() && line.tenant_of.is_empty());
        // Leaving: the head's place passes on; a requester's last waiter takes its turn with it.
        let a1 = line.join("a".into()).0;
        let b1 = line.join("b".into()).0;
        let a2 = line.join("a".into()).0;
        assert!(line.leave(b1).is_none(), "not the head: nobody to wake");
        assert_eq!(line.turns, VecDeque::from([Arc::from("a")]));
        assert!(line.leave(a1).is_some(), "the head left: the next one is woken");
        assert_eq!(line.head(), Some(a2));
        assert!(line.leave(a2).is_none());
        assert!(line.is_empty() && line.waiters.is_empty() && line.tenant_of.is_empty());
    }
}
