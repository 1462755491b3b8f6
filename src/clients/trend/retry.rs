//! When the client repeats a failed request, and how long it waits first.

use std::time::Duration;

use rand::Rng;

use crate::clients::{ErrorKind, VendorError};

/// Whether a request may be sent again after a failure that might have reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replay {
    /// Repeating it has no further effect (GET, DELETE, search, modify).
    Safe,
    /// Repeating it could act twice (create, regenerate): only after a failure that proves
    /// the server did not process it (429, or a connection that was never made).
    OnlyIfUnprocessed,
}

/// Bounds on the client's own retries. Longer waits are the caller's business: the last error
/// (e.g. `RateLimited { retry_after }`) goes back to it to requeue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// First backoff; doubles per retry, with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A longer `Retry-After` is cut to this.
    pub max_retry_after: Duration,
    /// No retry starts once this much time (waits included) would be used up.
    pub max_total: Duration,
}

impl RetryPolicy {
    /// `max_attempts` tries, backoff from `initial_backoff` (capped at 32x), `Retry-After` capped at 60 s.
    pub fn new(max_attempts: u32, initial_backoff: Duration, max_total: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            initial_backoff,
            max_backoff: initial_backoff.saturating_mul(32),
            max_retry_after: Duration::from_secs(60),
            max_total,
        }
    }

    /// One attempt only.
    pub fn no_retries() -> Self {
        Self::new(1, Duration::ZERO, Duration::ZERO)
    }

    /// Backoff before retry number `retry` (1-based): exponential, with jitter in the upper half.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.initial_backoff.saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let ceiling = exp.min(self.max_backoff);
        if ceiling.is_zero() {
            return ceiling;
        }
        let half = ceiling / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms).min(ceiling - half)
    }

    /// Waits before attempt `attempt + 1` of `operation` (logging why), or gives up with `error`.
    pub(super) async fn pause_or_give_up(
        &self,
        operation: &str,
        attempt: u32,
        elapsed: Duration,
        error: VendorError,
        replay: Replay,
        unsent: bool,
    ) -> Result<(), VendorError> {
        let Some(wait) = self.wait_before_retry(attempt, elapsed, &error, replay, unsent) else { return Err(error) };
        tracing::debug!(
            operation,
            attempt,
            kind = error.kind.name(),
            status = error.status,
            wait_ms = wait.as_millis() as u64,
            "retrying Trend API call"
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// How long to wait before attempt `attempt + 1`, or `None` to give up with `error`.
    /// `unsent` means the request provably never reached the server (connection not established).
    pub(super) fn wait_before_retry(
        &self,
        attempt: u32,
        elapsed: Duration,
        error: &VendorError,
        replay: Replay,
        unsent: bool,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts || error.held_back {
            return None;
        }
        let wait = match &error.kind {
            ErrorKind::RateLimited { retry_after } => {
                retry_after.map(|d| d.min(self.max_retry_after)).unwrap_or_else(|| self.backoff(attempt))
            }
            ErrorKind::Transient if replay == Replay::Safe || unsent => self.backoff(attempt),
            _ => return None,
        };
        (elapsed.saturating_add(wait) <= self.max_total).then_some(wait)
    }
}

impl Default for RetryPolicy {
    /// 5 attempts, backoff from 1 s to 30 s, within 2 minutes.
    fn default() -> Self {
        Self { max_backoff: Duration::from_secs(30), ..Self::new(5, Duration::from_secs(1), Duration::from_secs(120)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> VendorError {
        VendorError::new(kind, "op", None, "")
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = RetryPolicy::new(10, Duration::from_millis(100), Duration::from_secs(60));
        for _ in 0..50 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100), "{b1:?}");
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400), "{b3:?}");
            let b30 = p.backoff(30);
            assert!(b30 >= Duration::from_millis(1600) && b30 <= Duration::from_millis(3200), "{b30:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let p = RetryPolicy::default();
        let limited = |s| err(ErrorKind::RateLimited { retry_after: Some(Duration::from_secs(s)) });
        assert_eq!(
            p.wait_before_retry(1, Duration::ZERO, &limited(7), Replay::OnlyIfUnprocessed, false),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            p.wait_before_retry(1, Duration::ZERO, &limited(600), Replay::Safe, false),
            Some(Duration::from_secs(60))
        );
        // A wait past the total budget goes back to the caller instead.
        assert_eq!(p.wait_before_retry(1, Duration::from_secs(100), &limited(30), Replay::Safe, false), None);
    }

    #[test]
    fn transient_errors_retry_only_replayable_requests() {
        let p = RetryPolicy::default();
        let t = err(ErrorKind::Transient);
        assert!(p.wait_before_retry(1, Duration::ZERO, &t, Replay::Safe, false).is_some());
        assert!(p.wait_before_retry(1, Duration::ZERO, &t, Replay::OnlyIfUnprocessed, false).is_none());
        assert!(p.wait_before_retry(1, Duration::ZERO, &t, Replay::OnlyIfUnprocessed, true).is_some());
    }

    #[test]
    fn attempts_are_bounded_and_final_errors_are_not_retried() {
        let p = RetryPolicy::new(3, Duration::from_millis(1), Duration::from_secs(10));
        let t = err(ErrorKind::Transient);
        assert!(p.wait_before_retry(2, Duration::ZERO, &t, Replay::Safe, false).is_some());
        assert!(p.wait_before_retry(3, Duration::ZERO, &t, Replay::Safe, false).is_none());
        for kind in
            [ErrorKind::Unauthorized, ErrorKind::Forbidden, ErrorKind::NotFound, ErrorKind::Invalid, ErrorKind::Tls]
        {
            assert!(p.wait_before_retry(1, Duration::ZERO, &err(kind), Replay::Safe, false).is_none());
        }
        assert!(RetryPolicy::no_retries().wait_before_retry(1, Duration::ZERO, &t, Replay::Safe, false).is_none());
    }
}
