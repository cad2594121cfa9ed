//! The gRPC port's connections: what a slow or silent client may hold, bounded.
//!
//! tonic bounds streams per connection, but not how long a connection may sit without a
//! request, nor how many connections there are. So tessera accepts them itself:
//! - at most `max_connections` open: past it, no more are accepted until one closes (they wait
//!   in the kernel's backlog);
//! - a TLS handshake, when TLS is on, runs beside the accept loop and must finish within the
//!   header timeout;
//! - a connection on which no request has started `header_timeout` after it was accepted (a
//!   silent socket, an h2 preface without a stream, headers that trickle in) is closed;
//! - a connection with no request in flight for `idle_timeout` since its last one ended is
//!   closed.
//!
//! "A request has started" is the gate's word (`gate.rs` marks it when the headers have
//! arrived); a request in flight is bounded by the gate's body timeout and the request's
//! own deadline, not here.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// What a slow or silent client may hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Requests on one connection, as the gate reports them.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    started: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last request ended, in microseconds after `accepted`.
    last_end: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
        }
    }

    pub fn request_started(&self) {
        self.started.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_ended(&self) {
        let since = u64::try_from(self.accepted.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_end.store(since, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// When this connection expires if nothing happens; `None` while a request runs.
    fn expires_at(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        if !self.started.load(Ordering::Relaxed) {
            return Some(self.accepted + limits.header_timeout);
        }
        let last_end = Duration::from_micros(self.last_end.load(Ordering::Relaxed));
        Some(self.accepted + last_end + limits.idle_timeout)
    }
}

/// What the gate learns of a request's connection (tonic puts it in the request's extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// TLS: the client presented a certificate that the configured CA signed.
    pub client_certified: bool,
    pub activity: Arc<Activity>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection that closes itself when its time is up (see the module's rules).
pub struct Guarded {
    io: Io,
    info: ConnInfo,
    limits: ConnectionLimits,
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Guarded {
    fn new(io: Io, info: ConnInfo, limits: ConnectionLimits, permit: OwnedSemaphorePermit) -> Self {
        let first = info.activity.accepted + limits.header_timeout;
        Self {
            io,
            info,
            limits,
            timer: Box::pin(tokio::time::sleep_until(first.into())),
            _permit: permit,
        }
    }

    /// Whether the connection's time is up; otherwise the timer is armed to wake the reader.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match self.info.activity.expires_at(&self.limits) {
                Some(at) if at <= now => return true,
                Some(at) => self.timer.as_mut().reset(at.into()),
                // A request runs: look again after the idle timeout.
                None => self
                    .timer
                    .as_mut()
                    .reset((now + self.limits.idle_timeout).into()),
            }
        }
        false
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request in time",
            )));
        }
        match &mut this.io {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// Accepts connections for tonic until dropped: the stream of guarded connections, and the
/// accept task's handle (abort it to stop accepting).
pub fn incoming(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
) -> (
    impl Stream<Item = io::Result<Guarded>>,
    tokio::task::JoinHandle<()>,
) {
    let (ready, accepted) = mpsc::channel::<Guarded>(64);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (tcp, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off, then go on.
                    tracing::warn!(error = %err, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let ready = ready.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let activity = Arc::new(Activity::new());
                let deadline = activity.accepted + limits.header_timeout;
                let (io, client_certified) = match tls {
                    None => (Io::Plain(tcp), false),
                    Some(acceptor) => {
                        match tokio::time::timeout_at(deadline.into(), acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let certified = stream.get_ref().1.peer_certificates().is_some();
                                (Io::Tls(Box::new(stream)), certified)
                            }
                            Ok(Err(err)) => {
                                tracing::debug!(error = %err, %remote, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                };
                let info = ConnInfo {
                    remote: Some(remote),
                    client_certified,
                    activity,
                };
                let _ = ready.send(Guarded::new(io, info, limits, permit)).await;
            });
        }
    });
    let stream = futures_util::stream::unfold(accepted, |mut accepted| async move {
        accepted.recv().await.map(|io| (Ok(io), accepted))
    });
    (stream, task)
}
