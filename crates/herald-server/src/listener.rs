//! Accepting and serving HTTP connections. This replaces `axum::serve`, which exposes none of
//! the knobs a server facing untrusted clients needs. It owns:
//!
//! - the connection cap (`server.max_connections`): a permit is taken *before* `accept`, so
//!   when all are in use further clients wait in the kernel's accept backlog until a
//!   connection closes (nothing is refused; the backlog's own limit applies beyond that);
//! - TCP_NODELAY on every accepted socket;
//! - a watchdog per connection that closes it when a request head takes longer than
//!   `server.header_read_timeout_secs` (from the accept, or from the first byte of a later
//!   request: slowloris) or when it sits idle between requests longer than
//!   `server.keep_alive_timeout_secs`. hyper's own `header_read_timeout` is not used: it
//!   starts counting as soon as a kept-alive connection goes idle, so it cannot give idle
//!   connections longer than a request head;
//! - hyper's parser limits, set as backstops well above the limits `crate::limits` enforces
//!   (so that oversized requests are refused with an OperationOutcome there, not by hyper with
//!   an empty body);
//! - graceful shutdown: stop accepting, let in-flight requests finish, close the other
//!   connections (idle, or still sending a request head) at once.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::ServerConfig;

/// hyper refuses a request line whose target is longer than this (with a bare 414).
pub const HYPER_MAX_URI_BYTES: usize = u16::MAX as usize - 1;

/// Header fields per request above which hyper refuses the request (with a bare 431).
pub const HARD_MAX_HEADERS: usize = 1024;

/// Connection limits, taken from [`ServerConfig`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed for a request head.
    pub header_read_timeout: Duration,
    /// Time a connection may sit idle between requests.
    pub keep_alive_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Largest request head hyper buffers (a backstop: four times the configured limits).
    pub hard_max_head_bytes: usize,
}

impl Limits {
    /// The limits the configuration asks for.
    pub fn from_config(config: &ServerConfig) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            keep_alive_timeout: Duration::from_secs(config.keep_alive_timeout_secs),
            max_connections: config.max_connections,
            hard_max_head_bytes: config
                .max_uri_bytes
                .saturating_add(config.max_header_bytes)
                .saturating_mul(4)
                .max(64 * 1024),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        tracing::trace!(%peer, "connection accepted");
        connections.spawn(serve_connection(
            tcp,
            app.clone(),
            Arc::clone(&limits),
            stop_rx.clone(),
            permit,
        ));
        while let Some(done) = connections.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "a connection task failed");
            }
        }
    }
    drop(listener);
    drop(stop_rx);
    tracing::info!(
        connections = connections.len(),
        "no longer accepting connections; waiting for in-flight requests"
    );
    let _ = stop_tx.send(());
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Errors of `accept`: a failed handshake concerns one client only; anything else (out of file
/// descriptors, say) is logged and retried after a pause rather than spinning.
async fn accept_failed(e: io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused => {
            tracing::debug!(error = %e, "accept failed");
        }
        _ => {
            tracing::error!(error = %e, "accept failed; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Serves one connection until it ends, its watchdog fires, or shutdown has let it finish.
async fn serve_connection(
    tcp: TcpStream,
    app: Router,
    limits: Arc<Limits>,
    mut stop: watch::Receiver<()>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(WatchedIo {
        inner: tcp,
        activity: Arc::clone(&activity),
    });
    let requests = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(Arc::clone(&requests));
        let app = app.clone();
        async move {
            let resp = app.oneshot(req.map(Body::new)).await;
            drop(in_flight);
            resp.map_err(|never: Infallible| match never {})
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The watchdog below owns head and idle timeouts.
        .header_read_timeout(None)
        .max_headers(HARD_MAX_HEADERS)
        .max_buf_size(limits.hard_max_head_bytes);
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.hard_max_head_bytes).unwrap_or(u32::MAX));
    // With upgrades: a websocket (`/ws`) takes the connection over once its handshake is
    // answered; the future then ends and the socket lives on in its own task (its permit is
    // released: websockets are bounded by the process's file descriptors, not max_connections).
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            why = activity.expired(&limits) => {
                tracing::debug!("closing connection: {why}");
                break;
            }
            _ = stop.changed(), if !stopping => {
                // hyper's graceful shutdown waits for a request head still arriving (it is
                // not "idle"); with no request in flight there is nothing to finish.
                if !matches!(activity.phase(), Phase::Busy { .. }) {
                    tracing::debug!("closing connection without a request in flight: shutdown");
                    break;
                }
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Where a connection is between requests, as the watchdog sees it.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head since `since`.
    Head { since: Instant },
    /// This many requests are being handled.
    Busy { requests: usize },
    /// No request since `since`, and no byte of the next one yet.
    Idle { since: Instant },
}

/// A connection's phase, updated by its reads and its requests, watched by its watchdog.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            phase: Mutex::new(Phase::Head {
                since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        *phase = f(*phase);
        drop(phase);
        self.changed.notify_one();
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes arrived: on an idle connection they start the next request's head.
    fn bytes_read(&self) {
        if matches!(self.phase(), Phase::Idle { .. }) {
            self.update(|p| match p {
                Phase::Idle { .. } => Phase::Head {
                    since: Instant::now(),
                },
                other => other,
            });
        }
    }

    fn request_started(&self) {
        self.update(|p| match p {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        });
    }

    fn request_finished(&self) {
        self.update(|p| match p {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        });
    }

    /// Resolves when the connection has overrun its current phase's time, saying which.
    async fn expired(&self, limits: &Limits) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let (deadline, why) = match self.phase() {
                Phase::Busy { .. } => {
                    changed.await;
                    continue;
                }
                Phase::Head { since } => (
                    since + limits.header_read_timeout,
                    "request head not received within server.header_read_timeout_secs",
                ),
                Phase::Idle { since } => (
                    since + limits.keep_alive_timeout,
                    "idle longer than server.keep_alive_timeout_secs",
                ),
            };
            if Instant::now() >= deadline {
                return why;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = changed => {}
            }
        }
    }
}

/// Marks a request in flight for as long as it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.request_started();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A TCP stream that reports received bytes to its connection's [`Activity`].
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        r
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
