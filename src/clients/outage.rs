//! Whether a vendor endpoint is answering at all: a circuit breaker per endpoint.
//!
//! When a request gets no answer (its connection refused, reset or timed out) and nothing else was answered by the
//! endpoint since that request was sent, the endpoint is *out*, and a prober starts: it sends `GET /` to the origin
//! at once and then every [`PROBE_INTERVAL`] (no credentials, bounded by [`PROBE_TIMEOUT`]); any HTTP answer,
//! whatever its status, ends the outage. Meanwhile requests to the endpoint are not sent but fail at once with a
//! [`VendorError`] of kind `Transient` marked [`VendorError::held_back`], which the clients do not retry. One
//! dropped connection costs little: the first probe is answered before the client's own retry (a second later) is
//! due. Without this, every reconcile waiting for a hung vendor holds its worker for the client's whole timeout
//! (and its retries: minutes), and the resources queued behind it say nothing about the outage until their turn.
//!
//! Each end of an outage counts in the endpoints' recoveries, which the operator watches to retry at once the
//! resources that failed for the outage instead of leaving them in their backoff (up to 5 minutes). A prober with no
//! request held back for [`PROBER_IDLE`] stops (the provider may be gone); the next request is then sent as the
//! probe, and the prober starts again if it goes unanswered.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use super::{ErrorKind, VendorError, observe};

/// How often a prober asks an endpoint that is out whether it answers again.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a probe waits for an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A prober with no request held back for this long stops.
pub const PROBER_IDLE: Duration = Duration::from_secs(600);

/// One endpoint's reachability, shared by every client of the endpoint (it lives in its [`super::RateLimiter`]).
#[derive(Debug)]
pub struct Reachability {
    state: Mutex<State>,
    /// Counts the ends of outages (shared by all endpoints of one [`super::RateLimiters`]).
    recoveries: Arc<tokio::sync::watch::Sender<u64>>,
}

#[derive(Debug, Default)]
struct State {
    /// When the endpoint last answered anything.
    last_answer: Option<Instant>,
    /// Set while the endpoint is out.
    out: Option<Out>,
}

#[derive(Debug)]
struct Out {
    /// The endpoint's origin, for the error of a request held back.
    origin: String,
    /// When the request that found it out was sent.
    since: Instant,
    /// A probe request or the prober is under way: other requests are held back.
    probing: bool,
    /// The last request held back.
    last_held: Instant,
}

/// A request sent as the probe of an endpoint that is out. Dropped before it was settled (the request cancelled),
/// it leaves the probing to the next request.
#[derive(Debug)]
pub struct Probe {
    reach: Arc<Reachability>,
    settled: bool,
}

impl Probe {
    /// The probe got an answer, or its failure was reported to [`Reachability::unanswered`].
    pub fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if !self.settled
            && let Some(out) = self.reach.state().out.as_mut()
        {
            out.probing = false;
        }
    }
}

impl Reachability {
    pub fn new(recoveries: Arc<tokio::sync::watch::Sender<u64>>) -> Self {
        Self { state: Mutex::default(), recoveries }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("reachability poisoned")
    }

    /// Whether a request for `operation` may be sent: an error (held back) while the endpoint is out and probed;
    /// otherwise sent, as the endpoint's probe (`Some`) when it is out and nobody probes it.
    pub fn admit(self: &Arc<Self>, operation: &str) -> Result<Option<Probe>, VendorError> {
        let mut state = self.state();
        let Some(out) = state.out.as_mut() else { return Ok(None) };
        if !out.probing {
            out.probing = true;
            return Ok(Some(Probe { reach: self.clone(), settled: false }));
        }
        out.last_held = Instant::now();
        Err(held_back(operation, &out.origin))
    }

    /// The endpoint answered (any status). Returns whether this ended an outage.
    pub fn answered(&self) -> bool {
        let mut state = self.state();
        state.last_answer = Some(Instant::now());
        let recovered = state.out.take().is_some();
        drop(state);
        if recovered {
            self.recoveries.send_modify(|n| *n += 1);
        }
        recovered
    }

    /// A request sent at `sent` to `origin` got no answer: the endpoint is out when nothing answered since `sent`.
    /// Returns whether a prober should start: the endpoint just went out, or the request was its probe.
    pub fn unanswered(&self, sent: Instant, probe: Option<Probe>, origin: &str) -> bool {
        let was_probe = probe.is_some_and(|p| {
            p.settle();
            true
        });
        let mut state = self.state();
        let answered_since = state.last_answer.is_some_and(|t| t >= sent);
        match state.out.as_mut() {
            Some(out) if was_probe => {
                out.probing = true;
                true
            }
            Some(_) => false,
            None if answered_since => false,
            None => {
                let now = Instant::now();
                state.out = Some(Out { origin: origin.to_owned(), since: sent, probing: true, last_held: now });
                true
            }
        }
    }

    /// The prober's loop: `GET /` to `origin` with `client` at once and then every [`PROBE_INTERVAL`] until an
    /// answer comes, or no request was held back for [`PROBER_IDLE`].
    pub async fn probe(self: Arc<Self>, client: reqwest::Client, vendor: &'static str, origin: String) {
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            {
                let mut state = self.state();
                let Some(out) = state.out.as_mut() else { return };
                if out.last_held.elapsed() >= PROBER_IDLE {
                    out.probing = false;
                    tracing::info!(endpoint = %origin, "vendor endpoint still not answering; probing stops until the next request");
                    return;
                }
            }
            let sent = std::time::Instant::now();
            let result = client.get(format!("{origin}/")).timeout(PROBE_TIMEOUT).send().await;
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            observe::record(vendor, &origin, "probe", status, sent.elapsed().as_secs_f64());
            if status.is_some() {
                let out_for = self.state().out.as_ref().map(|o| o.since.elapsed());
                self.answered();
                tracing::info!(endpoint = %origin, out_for_seconds = out_for.map(|d| d.as_secs()), "vendor endpoint answers again");
                return;
            }
        }
    }

    /// Whether the endpoint is out now.
    #[cfg(test)]
    fn is_out(&self) -> bool {
        self.state().out.is_some()
    }
}

/// The error of a request not sent because its endpoint is out.
fn held_back(operation: &str, endpoint: &str) -> VendorError {
    let mut e = VendorError::new(
        ErrorKind::Transient,
        operation,
        None,
        format!("not sent: {endpoint} is not answering; requests resume as soon as it answers a probe"),
    );
    e.held_back = true;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach() -> (Arc<Reachability>, tokio::sync::watch::Receiver<u64>) {
        let (tx, rx) = tokio::sync::watch::channel(0);
        (Arc::new(Reachability::new(Arc::new(tx))), rx)
    }

    #[tokio::test]
    async fn an_unanswered_request_starts_a_prober_and_holds_back_the_rest() {
        let (r, rx) = reach();
        let sent = Instant::now();
        assert!(r.admit("op").unwrap().is_none(), "up: sent as usual");
        assert!(r.unanswered(sent, None, "https://v:443"), "out: a prober starts");
        assert!(r.is_out());
        let held = r.admit("create API key").unwrap_err();
        assert!(held.held_back && held.kind == ErrorKind::Transient);
        assert_eq!(
            held.to_string(),
            "create API key failed: not sent: https://v:443 is not answering; requests resume as soon as it \
             answers a probe"
        );
        // Another request that was in flight fails too: no second prober.
        assert!(!r.unanswered(sent, None, "https://v:443"));
        assert!(r.answered(), "an answer ends the outage");
        assert_eq!(*rx.borrow(), 1, "recoveries are counted");
        assert!(!r.is_out());
        assert!(r.admit("op").unwrap().is_none());
        assert!(!r.answered(), "answers while up end nothing");
        assert_eq!(*rx.borrow(), 1);
    }

    #[tokio::test]
    async fn a_stopped_prober_leaves_probing_to_the_next_request() {
        let (r, _rx) = reach();
        assert!(r.unanswered(Instant::now(), None, "e"));
        r.state().out.as_mut().unwrap().probing = false;
        let probe = r.admit("op").unwrap().expect("the next request is the probe");
        assert!(r.admit("op").unwrap_err().held_back, "one probe at a time");
        drop(probe);
        let probe = r.admit("op").unwrap().expect("a cancelled probe leaves it to the next request");
        assert!(r.unanswered(Instant::now(), Some(probe), "e"), "a probe unanswered starts the prober again");
        assert!(r.admit("op").unwrap_err().held_back);
    }

    #[tokio::test]
    async fn a_failure_while_others_are_answered_is_not_an_outage() {
        let (r, _rx) = reach();
        let sent = Instant::now();
        r.answered();
        r.unanswered(sent, None, "e");
        assert!(!r.is_out(), "answered since it was sent: one bad request, not an outage");
        let earlier = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        r.answered();
        r.unanswered(earlier, None, "e");
        assert!(!r.is_out());
        r.unanswered(Instant::now(), None, "e");
        assert!(r.is_out(), "nothing answered since it was sent");
    }

    #[tokio::test]
    async fn the_prober_ends_the_outage_on_any_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let (r, mut rx) = reach();
        assert!(r.unanswered(Instant::now(), None, &origin));
        super::super::install_crypto_provider();
        let prober = tokio::spawn(r.clone().probe(reqwest::Client::new(), "test", origin));
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).await.unwrap();
        let request = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(request.starts_with("GET / HTTP/1.1"), "{request}");
        assert!(!request.to_ascii_lowercase().contains("authorization"), "a probe carries no credentials");
        conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        rx.changed().await.unwrap();
        prober.await.unwrap();
        assert!(!r.is_out(), "a 404 is an answer");
    }
}
