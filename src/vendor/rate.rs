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
    /// A limiter admitting `per_minute` requests per minute, spread evenly, with a small burst.
    pub fn per_minute(per_minute: u32) -> Arc<Self> {
        let rate = NonZeroU32::new(per_minute.max(1)).expect("non-zero");
        // Allow a burst of up to 1/10 of the minute's budget so a handful of calls is not serialised.
        let burst = NonZeroU32::new((per_minute / 10).max(1)).expect("non-zero");
        let inner = DefaultDirectRateLimiter::direct(Quota::per_minute(rate).allow_burst(burst));
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
