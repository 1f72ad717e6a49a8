//! Our own accept loop (axum::serve cannot expose TLS state): TCP accept → TLS handshake with a
//! deadline → the peer's leaf certificate goes into a [`ConnInfo`] request extension → hyper HTTP/1.1
//! with keep-alive (Windows reuses connections within a session).
//!
//! The transport also bounds what a client can hold before it has authenticated, once for every
//! surface (device endpoints, admin API, console):
//!
//! - **Connections**: at most [`TransportLimits::max_connections`] at once (lowered to fit the
//!   file-descriptor limit) and [`TransportLimits::max_connections_per_address`] per peer address
//!   (trusted proxies exempt). A connection over a cap is answered `503` with `Retry-After` after
//!   its handshake; when even those answers are many at once ([`REFUSING_AT_ONCE`]) it is closed.
//! - **Time**: the TLS handshake, a request head (from its first byte; a new connection's first
//!   request from the handshake), the whole body (from the head, with a minimum average rate after
//!   a grace period) and the idle time between requests each have a deadline. A body that misses
//!   its deadline fails for the handler reading it ([`BodyTooSlow`]) and the request is answered
//!   `408` with `Connection: close`, whatever the handler made of the error.
//! - **Descriptors**: the loop keeps a descriptor in reserve (`/dev/null`). When accept fails with
//!   EMFILE/ENFILE it releases the reserve, accepts the waiting connection and closes it at once,
//!   and takes the reserve back: clients see a closed connection instead of hanging in the
//!   backlog, the loop does not spin, and the warning is logged once per [`LOG_INTERVAL`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use steward_http::ConnInfo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

use crate::config::Config;
use crate::tls::{Surface, Tls};

/// A request rewrite applied before routing (the platforms' path canonicalisation: Windows device
/// paths are case-insensitive, routing is not).
pub type Rewrite = fn(http::Request<Incoming>) -> http::Request<Incoming>;

/// `Retry-After` of a connection refused over a cap.
pub const RETRY_AFTER_SECONDS: u64 = 10;
/// Connections over a cap answered 503 at once; past this they are closed unanswered.
pub const REFUSING_AT_ONCE: usize = 64;
/// Repeated transport warnings (descriptors exhausted, caps reached) are logged once per interval,
/// with the number of occurrences since the last message.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Descriptors kept free for everything but connections (database files, the reserve, refusals,
/// webhook deliveries): the connection cap is lowered to the descriptor limit minus this (at most a
/// quarter of the limit).
pub const DESCRIPTOR_HEADROOM: u64 = 256;

/// Deadlines of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// The whole body, from the request head.
    pub timeout: Duration,
    /// Minimum average rate (bytes per second since the head) after `grace`; 0 = none.
    pub min_rate: u64,
    pub grace: Duration,
}

impl BodyLimits {
    /// How long after the head a body that has delivered `received` bytes may still take: the
    /// grace period plus `received / min_rate`, never more than the timeout.
    pub fn allowance(&self, received: u64) -> Duration {
        if self.min_rate == 0 {
            return self.timeout;
        }
        let earned = Duration::from_millis(received.saturating_mul(1000) / self.min_rate);
        self.timeout.min(self.grace.saturating_add(earned))
    }
}

/// What the transport enforces (`limits.*`).
#[derive(Debug, Clone)]
pub struct TransportLimits {
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub body: BodyLimits,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// Peers the per-address cap does not apply to (the trusted proxies, which carry many clients).
    pub exempt: Vec<IpAddr>,
}

impl TransportLimits {
    pub fn from_config(config: &Config) -> Self {
        let l = &config.limits;
        Self {
            handshake_timeout: Duration::from_secs(l.handshake_timeout_seconds),
            header_timeout: Duration::from_secs(l.header_timeout_seconds),
            body: BodyLimits {
                timeout: Duration::from_secs(l.body_timeout_seconds),
                min_rate: l.body_min_rate_bytes_per_second,
                grace: Duration::from_secs(l.body_min_rate_grace_seconds),
            },
            idle_timeout: Duration::from_secs(l.idle_timeout_seconds),
            max_connections: l.max_connections,
            max_connections_per_address: l.max_connections_per_address,
            exempt: config
                .management
                .trusted_proxies
                .iter()
                .map(IpAddr::to_canonical)
                .collect(),
        }
    }
}

/// The process's file-descriptor limit (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorLimit {
    /// The soft limit in force.
    pub soft: Option<u64>,
    pub hard: Option<u64>,
    /// The soft limit before [`raise_descriptor_limit`], when it raised it.
    pub raised_from: Option<u64>,
}

/// The current descriptor limit (`None` where the platform has no such notion).
pub fn descriptor_limit() -> Option<DescriptorLimit> {
    #[cfg(unix)]
    {
        let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        Some(DescriptorLimit {
            soft: l.current,
            hard: l.maximum,
            raised_from: None,
        })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (every connection holds a descriptor; the soft
/// default is often 1024). Returns the limit in force afterwards; an error leaves it unchanged.
pub fn raise_descriptor_limit() -> io::Result<Option<DescriptorLimit>> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        // An unlimited hard limit still has a ceiling for descriptors (Linux: fs.nr_open).
        let target = before.maximum.unwrap_or(1 << 20);
        if before.current.is_some_and(|soft| soft < target) {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(target),
                    maximum: before.maximum,
                },
            )?;
            return Ok(descriptor_limit().map(|l| DescriptorLimit {
                raised_from: before.current,
                ..l
            }));
        }
        Ok(descriptor_limit())
    }
    #[cfg(not(unix))]
    {
        Ok(None)
    }
}

/// The connection cap that fits `configured` into the descriptor limit.
pub fn effective_max_connections(configured: usize, limit: Option<DescriptorLimit>) -> usize {
    let Some(soft) = limit.and_then(|l| l.soft) else {
        return configured;
    };
    let usable = soft.saturating_sub(DESCRIPTOR_HEADROOM.min(soft / 4)).max(1);
    configured.min(usize::try_from(usable).unwrap_or(usize::MAX))
}

pub async fn serve(
    listener: TcpListener,
    tls: Arc<Tls>,
    app: Router,
    rewrite: Rewrite,
    limits: TransportLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls;
    let graceful = GracefulShutdown::new();
    let descriptors = descriptor_limit();
    let max_connections = effective_max_connections(limits.max_connections, descriptors);
    if max_connections < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            max_connections,
            descriptor_limit = ?descriptors.and_then(|d| d.soft),
            "limits.max_connections lowered to fit the file-descriptor limit"
        );
    }
    tracing::info!(
        max_connections,
        max_connections_per_address = limits.max_connections_per_address,
        descriptor_limit = ?descriptors.and_then(|d| d.soft),
        "connection limits"
    );
    let gate = Arc::new(Gate::new(
        max_connections,
        limits.max_connections_per_address,
        limits.exempt.clone(),
    ));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let limits = Arc::new(limits);
    let mut reserve = Reserve::open();
    let mut exhausted_log = LogThrottle::new(LOG_INTERVAL);
    let mut error_log = LogThrottle::new(LOG_INTERVAL);
    let mut cap_log = LogThrottle::new(LOG_INTERVAL);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) if out_of_descriptors(&e) => {
                // (Linux reports EMFILE before it looks at the queue: also when nothing waits.)
                match reserve.shed(&listener) {
                    Shed::NothingWaiting => {}
                    shed => {
                        if let Some(earlier) = exhausted_log.hit() {
                            tracing::warn!(
                                error = %e,
                                shed_since_last_message = earlier,
                                "out of file descriptors: new connections are closed unanswered until \
                                 some close (see limits.max_connections and the descriptor limit)"
                            );
                        }
                        if shed == Shed::NoReserve {
                            // Nothing to give up: wait for descriptors instead of spinning.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                continue;
            }
            Err(e) => {
                if let Some(earlier) = error_log.hit() {
                    tracing::warn!(error = %e, failed_since_last_message = earlier, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        match gate.admit(peer.ip()) {
            Ok(slot) => {
                tokio::spawn(connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    app.clone(),
                    rewrite,
                    limits.clone(),
                    graceful.watcher(),
                    slot,
                ));
            }
            Err(refusal) => {
                if let Some(earlier) = cap_log.hit() {
                    tracing::warn!(
                        %peer,
                        refused_since_last_message = earlier,
                        "{}: answering 503",
                        refusal.describe()
                    );
                }
                // A full refusal pool closes the connection unanswered: refusals must stay cheap.
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(refuse(tcp, acceptor.clone(), limits.clone(), refusal, permit));
                }
            }
        }
    }
    drop(listener);
    // Let in-flight requests finish, but not forever.
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

/// One admitted connection: handshake, then HTTP/1.1 until the client leaves or a deadline passes.
#[expect(clippy::too_many_arguments, reason = "the pieces of one connection, passed once")]
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Arc<Tls>,
    app: Router,
    rewrite: Rewrite,
    limits: Arc<TransportLimits>,
    watcher: Watcher,
    _slot: Slot,
) {
    let tls_stream = match tokio::time::timeout(limits.handshake_timeout, handshake(&acceptor, tcp)).await {
        Ok(Ok(Some(s))) => s,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let client_cert = tls_stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| Arc::new(c.clone().into_owned()));
    let info = ConnInfo { peer, client_cert };
    let activity = Arc::new(Activity::new());
    let body_limits = limits.body;
    let svc = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let busy = activity.busy();
            let app = app.clone();
            let info = info.clone();
            async move {
                let mut req = rewrite(req);
                req.extensions_mut().insert(info);
                let (req, timed_out) = limit_body(req, body_limits);
                let response = app.oneshot(req).await;
                drop(busy);
                if timed_out.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "request body too slow: 408");
                    return Ok(plain_response(
                        http::StatusCode::REQUEST_TIMEOUT,
                        None,
                        "the request body did not arrive in time\n",
                    ));
                }
                response
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // hyper's header timer also runs while a kept-alive connection is idle; the activity
        // watchdog below times heads from their first byte instead.
        .header_read_timeout(None)
        .keep_alive(true)
        .serve_connection(TokioIo::new(Tracked::new(tls_stream, activity.clone())), svc);
    tokio::select! {
        served = watcher.watch(conn) => {
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with error");
            }
        }
        reason = activity.expired(limits.header_timeout, limits.idle_timeout) => {
            tracing::debug!(%peer, reason, "connection closed");
        }
    }
}

/// The TLS handshake with the configuration the ClientHello selects ([`Tls::select`]). `None`: an
/// ACME validation handshake, complete and closed (RFC 8737 §3: no application data follows).
async fn handshake(tls: &Tls, tcp: TcpStream) -> io::Result<Option<TlsStream<TcpStream>>> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
    let (surface, config) = tls.select(&start.client_hello());
    let mut stream = start.into_stream(config).await?;
    if surface == Surface::AcmeValidation {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
        return Ok(None);
    }
    Ok(Some(stream))
}

/// A connection over a cap: its request (whatever it is) is answered 503 with `Retry-After`, then
/// the connection is closed.
async fn refuse(
    tcp: TcpStream,
    acceptor: Arc<Tls>,
    limits: Arc<TransportLimits>,
    refusal: Refusal,
    _permit: OwnedSemaphorePermit,
) {
    let short = Duration::from_secs(5);
    let Ok(Ok(Some(tls_stream))) =
        tokio::time::timeout(limits.handshake_timeout.min(short), handshake(&acceptor, tcp)).await
    else {
        return;
    };
    let svc = hyper::service::service_fn(move |_req: http::Request<Incoming>| async move {
        Ok::<_, Infallible>(plain_response(
            http::StatusCode::SERVICE_UNAVAILABLE,
            Some(RETRY_AFTER_SECONDS),
            refusal.message(),
        ))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout.min(short))
        .keep_alive(false)
        .serve_connection(TokioIo::new(tls_stream), svc);
    let _ = tokio::time::timeout(limits.header_timeout.min(short) + short, conn).await;
}

fn plain_response(
    status: http::StatusCode,
    retry_after: Option<u64>,
    text: &'static str,
) -> http::Response<axum::body::Body> {
    let mut response = http::Response::new(axum::body::Body::from(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    if let Some(seconds) = retry_after {
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    response
}

fn out_of_descriptors(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        let code = e.raw_os_error();
        code == Some(rustix::io::Errno::MFILE.raw_os_error()) || code == Some(rustix::io::Errno::NFILE.raw_os_error())
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// A descriptor held in reserve so that the loop can still accept (and close) a connection when
/// the process has none left.
struct Reserve {
    file: Option<std::fs::File>,
}

impl Reserve {
    fn open() -> Self {
        Self { file: Self::take() }
    }

    fn take() -> Option<std::fs::File> {
        std::fs::File::open(if cfg!(windows) { "NUL" } else { "/dev/null" }).ok()
    }

    /// Gives up the reserve, accepts one waiting connection and closes it, and takes the reserve
    /// back. The accept is tried once, without waiting: a connection arriving later may find
    /// descriptors again.
    fn shed(&mut self, listener: &TcpListener) -> Shed {
        if self.file.take().is_none() {
            self.file = Self::take();
            return Shed::NoReserve;
        }
        let mut once = Context::from_waker(std::task::Waker::noop());
        let shed = match listener.poll_accept(&mut once) {
            Poll::Ready(Ok(_closed)) => Shed::Closed,
            _ => Shed::NothingWaiting,
        };
        self.file = Self::take();
        shed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shed {
    /// A waiting connection was accepted and closed.
    Closed,
    NothingWaiting,
    /// No descriptor was in reserve (one is taken again when possible).
    NoReserve,
}

/// Logs a repeated event once per interval.
struct LogThrottle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(events since the last message)` when this one should be logged.
    fn hit(&mut self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    fn hit_at(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_none_or(|last| now.duration_since(last) >= self.every) {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Total,
    Address,
}

impl Refusal {
    fn describe(self) -> &'static str {
        match self {
            Refusal::Total => "connection limit reached (limits.max_connections)",
            Refusal::Address => "connection limit of one address reached (limits.max_connections_per_address)",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::Total => "the server has too many connections open; retry later\n",
            Refusal::Address => "too many connections from your address; retry later\n",
        }
    }
}

/// Counts open connections, in total and per peer address.
struct Gate {
    max_total: usize,
    max_per_address: usize,
    exempt: Vec<IpAddr>,
    open: Mutex<OpenConnections>,
}

#[derive(Default)]
struct OpenConnections {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl Gate {
    fn new(max_total: usize, max_per_address: usize, exempt: Vec<IpAddr>) -> Self {
        Self {
            max_total,
            max_per_address,
            exempt,
            open: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let ip = ip.to_canonical();
        let counted = !self.exempt.contains(&ip);
        let mut open = self.lock();
        if open.total >= self.max_total {
            return Err(Refusal::Total);
        }
        if counted {
            let n = open.per_address.entry(ip).or_default();
            if *n >= self.max_per_address {
                return Err(Refusal::Address);
            }
            *n += 1;
        }
        open.total += 1;
        Ok(Slot {
            gate: self.clone(),
            ip: counted.then_some(ip),
        })
    }
}

/// An admitted connection's place under the caps, given back when the connection ends.
struct Slot {
    gate: Arc<Gate>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = open.per_address.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_address.remove(&ip);
            }
        }
    }
}

/// Where a connection is between requests, for its deadlines.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Receiving a request head since (its first byte, or the handshake for a new connection).
    Head(Instant),
    /// A request is being handled (its body has its own deadlines).
    Busy,
    /// Kept alive with no request since (the last response byte written).
    Idle(Instant),
}

struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: on an idle connection they start a request head.
    fn read(&self) {
        let mut phase = self.lock();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// Bytes left: a response still being written keeps the connection from idling out.
    fn wrote(&self) {
        if let Phase::Idle(since) = &mut *self.lock() {
            *since = Instant::now();
        }
    }

    fn busy(self: &Arc<Self>) -> BusyGuard {
        *self.lock() = Phase::Busy;
        BusyGuard(self.clone())
    }

    /// Resolves when the current phase's deadline passes, with the reason.
    async fn expired(&self, header_timeout: Duration, idle_timeout: Duration) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let (deadline, reason) = match *self.lock() {
                Phase::Head(since) => (Some(since + header_timeout), "request head not received in time"),
                Phase::Idle(since) => (Some(since + idle_timeout), "idle"),
                Phase::Busy => (None, ""),
            };
            match deadline {
                Some(deadline) if deadline <= Instant::now() => return reason,
                Some(deadline) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Held while the service handles a request; the connection idles from its drop.
struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        *self.0.lock() = Phase::Idle(Instant::now());
        self.0.changed.notify_one();
    }
}

/// The connection's stream, reporting reads and writes to its [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The error a handler reading a body sees when the body missed its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTooSlow;

/// Puts the request's body under `limits`; the flag is set if it missed them. A request without a
/// body is passed through untouched.
fn limit_body(req: http::Request<Incoming>, limits: BodyLimits) -> (http::Request<axum::body::Body>, Arc<AtomicBool>) {
    let timed_out = Arc::new(AtomicBool::new(false));
    if req.body().is_end_stream() {
        return (req.map(axum::body::Body::new), timed_out);
    }
    let flag = timed_out.clone();
    let req = req.map(|inner| {
        axum::body::Body::new(TimedBody {
            inner,
            limits,
            start: Instant::now(),
            received: 0,
            sleep: None,
            timed_out: flag,
        })
    });
    (req, timed_out)
}

/// A request body with a deadline that moves with the bytes received ([`BodyLimits::allowance`]).
struct TimedBody<B> {
    inner: B,
    limits: BodyLimits,
    start: Instant,
    received: u64,
    /// Armed the first time the body has to wait for bytes.
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.start + this.limits.allowance(this.received);
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_earns_time_with_its_bytes_up_to_the_timeout() {
        let l = BodyLimits {
            timeout: Duration::from_secs(30),
            min_rate: 1024,
            grace: Duration::from_secs(10),
        };
        assert_eq!(l.allowance(0), Duration::from_secs(10));
        assert_eq!(l.allowance(5 * 1024), Duration::from_secs(15));
        assert_eq!(l.allowance(1 << 30), Duration::from_secs(30));
        let no_rate = BodyLimits { min_rate: 0, ..l };
        assert_eq!(no_rate.allowance(0), Duration::from_secs(30));
    }

    #[test]
    fn the_gate_counts_per_address_and_in_total() {
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let gate = Arc::new(Gate::new(4, 2, vec![proxy]));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Refusal::Address));
        // The same address spelled as IPv4-mapped IPv6 is the same peer.
        assert_eq!(
            gate.admit("::ffff:10.0.0.1".parse().unwrap()).err(),
            Some(Refusal::Address)
        );
        drop(a1);
        let _a3 = gate.admit(a).unwrap();
        // The exempt proxy passes the per-address cap, not the total.
        let _p1 = gate.admit(proxy).unwrap();
        let _p2 = gate.admit(proxy).unwrap();
        assert_eq!(gate.admit(proxy).err(), Some(Refusal::Total));
        assert_eq!(gate.admit("10.0.0.2".parse().unwrap()).err(), Some(Refusal::Total));
    }

    #[test]
    fn the_connection_cap_fits_the_descriptor_limit() {
        let limit = |soft| {
            Some(DescriptorLimit {
                soft: Some(soft),
                hard: Some(soft),
                raised_from: None,
            })
        };
        assert_eq!(effective_max_connections(4096, limit(1024)), 768);
        assert_eq!(effective_max_connections(4096, limit(100_000)), 4096);
        assert_eq!(effective_max_connections(4096, limit(128)), 96);
        assert_eq!(effective_max_connections(4096, None), 4096);
    }

    #[test]
    fn repeated_warnings_are_logged_once_per_interval() {
        let mut t = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(t.hit_at(start), Some(0));
        assert_eq!(t.hit_at(start + Duration::from_secs(1)), None);
        assert_eq!(t.hit_at(start + Duration::from_secs(9)), None);
        assert_eq!(t.hit_at(start + Duration::from_secs(10)), Some(2));
        assert_eq!(t.hit_at(start + Duration::from_secs(11)), None);
    }
}
