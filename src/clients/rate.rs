use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
};

use governor::{DefaultDirectRateLimiter, Quota};

/// Client-side default: under the Deep Security Manager default of 500 requests per minute per key.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 400;

/// A client-side rate limit for one vendor endpoint (GCRA, from `governor`). Calls wait for a slot.
pub struct RateLimiter {
    per_minute: u32,
    inner: DefaultDirectRateLimiter,
}

impl RateLimiter {
    /// A limiter admitting at most `per_minute` requests in any 60 s window: a small burst (1/10 of the budget, so a
    /// handful of calls is not serialised) plus the rest spread evenly. GCRA admits `burst + rate × window` in a
    /// window, so the steady rate is the budget minus the burst.
    pub fn per_minute(per_minute: u32) -> Arc<Self> {
        let per_minute = per_minute.max(1);
        let inner = DefaultDirectRateLimiter::direct(quota(per_minute));
        Arc::new(Self { per_minute, inner })
    }

    pub fn limit_per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Waits until a request may be sent.
    pub async fn acquire(&self) {
        self.inner.until_ready().await;
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

/// One limiter per vendor endpoint (base URL), shared by every client talking to it.
#[derive(Debug, Clone)]
pub struct RateLimiters {
    per_minute: u32,
    by_endpoint: Arc<Mutex<HashMap<String, Arc<RateLimiter>>>>,
}

impl RateLimiters {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, by_endpoint: Arc::default() }
    }

    pub fn for_endpoint(&self, endpoint: &str) -> Arc<RateLimiter> {
        let mut map = self.by_endpoint.lock().expect("rate limiter map poisoned");
        map.entry(endpoint.trim_end_matches('/').to_owned())
            .or_insert_with(|| RateLimiter::per_minute(self.per_minute))
            .clone()
    }
}

impl Default for RateLimiters {
    fn default() -> Self {
        Self::new(DEFAULT_REQUESTS_PER_MINUTE)
    }
}

#[cfg(test)]
mod tests {
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
    }

    #[test]
    fn no_sixty_second_window_exceeds_the_budget() {
        // Drive the limiter with a fake clock: admit whenever allowed, for five minutes, then slide a 60 s window.
        let clock = governor::clock::FakeRelativeClock::default();
        let per_minute = 400u32;
        let limiter = governor::RateLimiter::direct_with_clock(quota(per_minute), clock.clone());
        let step = std::time::Duration::from_millis(10);
        let mut admitted = Vec::new();
        for i in 0..30_000u64 {
            while limiter.check().is_ok() {
                admitted.push(i * 10);
            }
            clock.advance(step);
        }
        let max_in_window = admitted
            .iter()
            .enumerate()
            .map(|(i, &t)| admitted[i..].iter().take_while(|&&u| u < t + 60_000).count())
            .max()
            .unwrap();
        assert!(max_in_window <= per_minute as usize, "{max_in_window} requests in one 60 s window");
        assert!(max_in_window >= (per_minute - 2) as usize, "the budget is used: {max_in_window}");
        assert_eq!(RateLimiter::per_minute(per_minute).limit_per_minute(), per_minute);
    }

    #[tokio::test]
    async fn burst_is_admitted_then_paced() {
        let l = RateLimiter::per_minute(600); // 10/s, burst 60
        let start = std::time::Instant::now();
        for _ in 0..60 {
            l.acquire().await;
        }
        assert!(start.elapsed() < std::time::Duration::from_millis(500));
        assert!(l.inner.check().is_err(), "the burst is used up");
    }
}
