//! The REST API's HTTP/1 server: hyper with the limits `axum::serve` does not set, so slow or
//! numerous clients cannot starve the others.
//!
//! - A connection has `header_read_timeout` to send a request's headers (slowloris: a byte a
//!   second holds a connection that long, no longer).
//! - At most `max_connections` are open; past that, new ones wait in the kernel's backlog
//!   until one closes.
//! - On shutdown, no new connection is accepted and open ones finish their request.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::warn;

/// Connection limits of the REST server.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    // Capped at a day: hyper adds it to an Instant, which a huge value would overflow.
    let header_timeout = limits.header_read_timeout.min(Duration::from_secs(86_400));
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let slots = std::sync::Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // A free slot first: at the cap, connections wait in the backlog instead.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot?,
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pass, without a busy loop.
                    warn!("cannot accept an HTTP connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Client errors (reset, header timeout) end only that connection.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
