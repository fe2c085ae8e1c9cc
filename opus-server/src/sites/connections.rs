//! The site server's connections: the accept loop, HTTP/1.1 on each connection under the
//! timeouts of [`ConnectionLimits`], and a cap on the connections one client address holds.
//!
//! Each connection's I/O goes through [`TimedIo`], which records when bytes move; its requests
//! go through a service that counts the ones in flight (until the response body is dropped). A
//! watchdog per connection reads that record and closes the connection when
//! - a request head (request line and headers) is still incomplete `header_timeout` after its
//!   first byte, or a new connection has sent nothing for that long (slowloris);
//! - a kept-alive connection has waited `keep_alive_timeout` for its next request;
//! - a request in flight has moved no byte either way for `idle_timeout` (a client that stopped
//!   reading its download).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::SiteServer;
use super::handler;
use super::https::OverTls;

/// How long site connections may wait, and how many one client address may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time a request head may take from its first byte (or a new connection may stay silent).
    pub header_timeout: Duration,
    /// Time a request in flight may go without a byte read or written.
    pub idle_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub keep_alive_timeout: Duration,
    /// Connections one IP address may hold at once; more are answered 503 and closed.
    pub per_ip: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            keep_alive_timeout: Duration::from_secs(30),
            per_ip: 256,
        }
    }
}

/// What one connection has done lately, written by its I/O and its requests, read by its
/// watchdog.
#[derive(Debug)]
struct Activity {
    /// When a byte was last read or written.
    last_io: Instant,
    /// Requests whose response has not been dropped yet.
    in_flight: usize,
    /// When the connection last had no request in flight (its start, or the end of a response).
    waiting_since: Instant,
    /// The first byte read while no request was in flight: the start of the next request head.
    head_started: Option<Instant>,
    /// Requests received so far.
    served: u64,
    /// Wakes the watchdog when the state changes, so it computes its deadline again (a
    /// keep-alive deadline can come sooner than the header deadline it was sleeping towards).
    changed: Arc<tokio::sync::Notify>,
}

type Shared = Arc<Mutex<Activity>>;

fn lock(a: &Shared) -> std::sync::MutexGuard<'_, Activity> {
    a.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A stream (TCP, or TLS over TCP) that records its traffic in [`Activity`].
struct TimedIo<S> {
    inner: S,
    activity: Shared,
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = Instant::now();
            let mut a = lock(&self.activity);
            a.last_io = now;
            if a.in_flight == 0 && a.head_started.is_none() {
                a.head_started = Some(now);
                a.changed.notify_one();
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            lock(&self.activity).last_io = Instant::now();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            lock(&self.activity).last_io = Instant::now();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Held by a response body: while it lives the request is in flight.
struct InFlight(Shared);

impl InFlight {
    fn start(activity: &Shared) -> InFlight {
        let mut a = lock(activity);
        a.in_flight += 1;
        a.served += 1;
        a.head_started = None;
        a.changed.notify_one();
        drop(a);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut a = lock(&self.0);
        a.in_flight -= 1;
        if a.in_flight == 0 {
            a.waiting_since = Instant::now();
            a.head_started = None;
            a.changed.notify_one();
        }
    }
}

/// A response body that keeps its request counted in flight until it is dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Waits until one of the limits is passed; returns which, for the log.
async fn expired(activity: &Shared, limits: ConnectionLimits) -> &'static str {
    loop {
        let (deadline, why, changed) = {
            let a = lock(activity);
            let changed = a.changed.clone();
            let (deadline, why) = if a.in_flight > 0 {
                (a.last_io + limits.idle_timeout, "idle")
            } else if let Some(started) = a.head_started {
                (started + limits.header_timeout, "request head too slow")
            } else if a.served == 0 {
                (a.waiting_since + limits.header_timeout, "no request")
            } else {
                (a.waiting_since + limits.keep_alive_timeout, "keep-alive")
            };
            (deadline, why, changed)
        };
        if Instant::now() >= deadline {
            return why;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = changed.notified() => {}
        }
    }
}

/// Counts connections per client address.
#[derive(Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounts on drop.
struct IpSlot {
    ips: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A slot for `ip`, or `None` when it already holds `cap` connections.
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ips: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.ips.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The body of the answer to a connection over the per-address cap.
const TOO_MANY: &str = "too many connections from this address, retry later\n";

/// Accepts connections on `listener` and serves them until `shutdown` completes; then stops
/// accepting, lets requests in flight finish, and returns once every connection is closed.
pub(super) async fn serve(
    server: Arc<SiteServer>,
    listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    accept_loop(server, listener, None, limits, shutdown).await
}

/// As [`serve`], over TLS: each connection's handshake (certificate by SNI, from `tls`) must end
/// within the header timeout; its requests are then served as plain ones are, marked
/// [`OverTls`].
pub(super) async fn serve_tls(
    server: Arc<SiteServer>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    accept_loop(server, listener, Some(acceptor), limits, shutdown).await
}

/// The accept loop of [`serve`] and [`serve_tls`].
async fn accept_loop(
    server: Arc<SiteServer>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let ips = Arc::new(PerIp::default());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait for connections to close.
                    tracing::error!(error = %e, "cannot accept a site connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let Some(slot) = ips.take(peer.ip(), limits.per_ip) else {
            tracing::debug!(%peer, "refusing a site connection: too many from this address");
            tracker.spawn(refuse(stream));
            continue;
        };
        // As nginx's `tcp_nodelay on`: a response's last segment is not held back by Nagle's
        // algorithm waiting for the client's delayed ACK on a kept-alive connection.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        match &tls {
            None => {
                tracker.spawn(connection(
                    server.clone(),
                    stream,
                    peer,
                    limits,
                    stop.clone(),
                    slot,
                    false,
                ));
            }
            Some(acceptor) => {
                let (server, acceptor, stop) = (server.clone(), acceptor.clone(), stop.clone());
                tracker.spawn(async move {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
                    match handshake.await {
                        // TLS-ALPN-01 validation: the handshake was the answer.
                        Ok(Ok(tls_stream))
                            if tls_stream.get_ref().1.alpn_protocol()
                                == Some(super::https::ACME_TLS_ALPN) =>
                        {
                            tracing::debug!(%peer, "answered a tls-alpn-01 validation");
                        }
                        Ok(Ok(tls_stream)) => {
                            connection(server, tls_stream, peer, limits, stop, slot, true).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Errors of one connection that do not concern the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Answers 503 to a connection over the cap and closes it.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{TOO_MANY}",
            TOO_MANY.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serves one connection until it ends, a limit closes it, or shutdown finishes it gracefully.
/// Requests of a TLS connection (`over_tls`) carry [`OverTls`].
async fn connection<S>(
    server: Arc<SiteServer>,
    stream: S,
    peer: SocketAddr,
    limits: ConnectionLimits,
    stop: CancellationToken,
    _slot: IpSlot,
    over_tls: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let now = Instant::now();
    let activity: Shared = Arc::new(Mutex::new(Activity {
        last_io: now,
        in_flight: 0,
        waiting_since: now,
        head_started: None,
        served: 0,
        changed: Arc::new(tokio::sync::Notify::new()),
    }));
    let io = TokioIo::new(TimedIo {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            if over_tls {
                req.extensions_mut().insert(OverTls);
            }
            let guard = InFlight::start(&activity);
            let server = server.clone();
            async move {
                let https = server.https().cloned();
                let mut resp = handler::serve(State(server), req.map(Body::new)).await;
                if over_tls {
                    super::https::add_hsts(https.as_deref(), &mut resp);
                }
                // The guard lives as long as the body: until the response is written.
                Ok::<_, Infallible>(resp.map(|body| TrackedBody {
                    inner: body,
                    _in_flight: guard,
                }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog times request heads, so that a head's time counts from its first byte and
    // not from the end of the previous response.
    builder.header_read_timeout(None).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let watchdog = expired(&activity, limits);
    tokio::pin!(watchdog);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "site connection ended with an error");
                }
                return;
            }
            why = &mut watchdog => {
                tracing::debug!(%peer, why, "closing a site connection: timed out");
                return;
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
