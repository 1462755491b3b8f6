//! HTTPS serving for the simulator: rustls + hyper, with the ability to drop a connection unanswered, and to hang
//! or refuse every connection while a [`Partition`] lasts.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};
use tower::ServiceExt;

use super::{
    faults::DropConnection,
    partition::{self, Partition, Reachability},
};

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// Serves `router` over TLS on `listener` until the task is aborted, following `reach`'s partitions: while it is
/// [`Partition::Refuse`] the port is closed (then bound again, same address), while [`Partition::Hang`] nothing
/// is answered.
pub async fn serve_tls(listener: TcpListener, router: Router, tls: Arc<ServerConfig>, reach: Reachability) {
    let acceptor = TlsAcceptor::from(tls);
    let addr = listener.local_addr().expect("a bound listener");
    let mut listener = Some(listener);
    let mut mode = reach.subscribe();
    loop {
        let current = *mode.borrow_and_update();
        if current == Partition::Refuse {
            listener = None;
            partition::until_not(&mut mode, Partition::Refuse).await;
            continue;
        }
        let bound = match listener.take() {
            Some(l) => l,
            None => match rebind(addr).await {
                Some(l) => l,
                None => continue,
            },
        };
        let accepted = tokio::select! {
            a = bound.accept() => a,
            // A change of partition is looked at again from the top (a refusal closes the port at once).
            _ = mode.changed() => {
                listener = Some(bound);
                continue;
            }
        };
        listener = Some(bound);
        let Ok((tcp, _peer)) = accepted else { continue };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut conn_mode = reach.subscribe();
        tokio::spawn(async move {
            // Accepted during a hang: held, no handshake, until the hang ends; then closed unanswered.
            if *conn_mode.borrow_and_update() == Partition::Hang {
                partition::until_not(&mut conn_mode, Partition::Hang).await;
                drop(tcp);
                return;
            }
            let mut refused = conn_mode.clone();
            let serve = async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let service = tower::service_fn(move |req: axum::extract::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    let mut request_mode = conn_mode.clone();
                    async move {
                        // A request on an open connection during a hang is never answered.
                        if *request_mode.borrow_and_update() == Partition::Hang {
                            partition::until_not(&mut request_mode, Partition::Hang).await;
                            return Err(Dropped);
                        }
                        let resp = router
                            .oneshot(req.map(axum::body::Body::new))
                            .await
                            .unwrap_or_else(|e: Infallible| match e {});
                        if resp.extensions().get::<DropConnection>().is_some() {
                            return Err(Dropped);
                        }
                        Ok::<_, Dropped>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            };
            // A refusal closes open connections too, as a host that went away would.
            tokio::select! {
                _ = serve => {}
                _ = partition::until(&mut refused, Partition::Refuse) => {}
            }
        });
    }
}

/// Binds `addr` again after a refusal (the port was ours a moment ago; retried briefly if the OS still holds it).
async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Some(l),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    tracing::warn!(%addr, "could not listen again after a partition");
    None
}
