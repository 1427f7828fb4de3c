//! The REST API's HTTP/1 server: hyper with the limits `axum::serve` does not set, so slow or
//! numerous clients cannot starve the others.
//!
//! - A connection has `header_read_timeout` to send a request's headers (slowloris: a byte a
//!   second holds a connection that long, no longer).
//! - At most `max_connections` are open; past that, new ones wait in the kernel's backlog
//!   until one closes. The open-file soft limit is raised to the hard one to fit them.
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
    raise_open_file_limit(limits.max_connections);
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

/// Files the process needs besides its connections (models, the gRPC server, logs, libraries).
const SPARE_FILES: u64 = 256;

/// Raises the open-file soft limit to the hard limit: each connection is a file, and the usual
/// soft limit of 1 024 would refuse clients (EMFILE) long before `max_connections`. Warns when
/// even the hard limit is too low, with the fix.
fn raise_open_file_limit(max_connections: usize) {
    #[cfg(target_os = "linux")]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        let needed = (max_connections as u64).saturating_add(SPARE_FILES);
        if limit.rlim_cur < needed {
            warn!(
                "at most {} files may be open, fewer than --max_connections {max_connections} \
                 needs ({needed}): clients past that are refused. Raise the limit (ulimit -n, or \
                 docker run --ulimit nofile={needed}) or lower --max_connections",
                limit.rlim_cur
            );
        }
    }
}
