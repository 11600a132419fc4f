//! The accept loop and connection tasks.
//!
//! One task accepts; each connection runs in a task of a `JoinSet` owned by that loop, so
//! no task outlives [`serve`]. A semaphore bounds the connections: when all permits are
//! taken the loop stops accepting and new clients wait in the kernel's backlog.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::AdminSource;
use super::router::{AdminRequest, AdminResponse, handle};

/// Resource limits of the admin server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// A client must send a complete request head within this time (also closes idle
    /// keep-alive connections after it).
    pub header_read_timeout: Duration,
    /// Deadline for reading the body and answering one request; past it the answer is 503.
    pub request_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish before being cut.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 256,
            max_body_bytes: 1 << 20,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves admin HTTP on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets in-flight requests finish for up to `limits.shutdown_grace`, aborts the rest and
/// returns. Connection and request errors are logged, never returned.
///
/// # Errors
/// None at present (accept errors are logged and retried); the `Result` leaves room for
/// fatal listener errors.
///
/// # Cancel safety
/// Dropping the future aborts every connection task at once (they live in a `JoinSet`
/// owned by it); cancel `shutdown` instead for a graceful stop.
///
/// # Examples
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use cortex_node::http::{serve, AdminSource, HttpLimits, MemberJson};
/// use tokio_util::sync::CancellationToken;
/// struct Alone;
/// impl AdminSource for Alone {
///     fn members(&self) -> Vec<MemberJson> { Vec::new() }
///     fn ready(&self) -> Result<(), String> { Ok(()) }
/// }
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let stop = CancellationToken::new();
/// let server = tokio::spawn(serve(listener, Arc::new(Alone), HttpLimits::default(), stop.clone()));
/// stop.cancel();
/// server.await.unwrap().unwrap();
/// # });
/// ```
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed; stop rather than spin
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "admin http accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let builder = builder.clone();
        let source = source.clone();
        let token = shutdown.clone();
        conns.spawn(async move {
            serve_connection(builder, stream, peer, source, limits, token).await;
            drop(permit);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = conns.len(),
            "admin http connections cut after the shutdown grace"
        );
    }
    conns.shutdown().await;
    Ok(())
}

async fn serve_connection(
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    source: Arc<dyn AdminSource>,
    limits: HttpLimits,
    token: CancellationToken,
) {
    // hyper's header timeout starts only after auto-detection of the HTTP version, which
    // itself waits for bytes: without this a silent client would hold a permit forever.
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let source = source.clone();
        async move {
            let resp = match tokio::time::timeout(
                limits.request_timeout,
                answer(&source, req, peer, limits.max_body_bytes),
            )
            .await
            {
                Ok(resp) => resp,
                Err(_) => AdminResponse::error(503, "the request took too long; try again"),
            };
            Ok::<_, Infallible>(resp.into_hyper())
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "admin http connection ended with an error");
            }
        }
        () = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "admin http connection ended during shutdown");
            }
        }
    }
}

async fn answer(
    source: &Arc<dyn AdminSource>,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    max_body: usize,
) -> AdminResponse {
    let (parts, body) = req.into_parts();
    let body: Bytes = match Limited::new(body, max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return AdminResponse::error(
                413,
                &format!("request body larger than {max_body} bytes"),
            );
        }
        Err(e) => return AdminResponse::error(400, &format!("cannot read request body: {e}")),
    };
    let mut req = AdminRequest::new(parts.method, parts.uri.path(), peer);
    req.query = parts.uri.query().map(str::to_string);
    req.headers = parts.headers;
    req.body = body;
    handle(source, req).await
}

/// A running admin server: its address and the means to stop it. Dropping it stops the
/// server abruptly; [`AdminServer::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl AdminServer {
    /// Binds `addr` (port 0 lets the OS pick) and starts serving on the current runtime.
    ///
    /// # Errors
    /// The bind error, e.g. the address is in use.
    pub async fn bind(
        addr: SocketAddr,
        source: Arc<dyn AdminSource>,
        limits: HttpLimits,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Self::start(listener, source, limits)
    }

    /// Starts serving on a bound listener; must be called inside a tokio runtime.
    ///
    /// # Errors
    /// If the listener's address cannot be read.
    pub fn start(
        listener: TcpListener,
        source: Arc<dyn AdminSource>,
        limits: HttpLimits,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, source, limits, shutdown.clone()));
        Ok(AdminServer {
            local_addr,
            shutdown,
            task,
        })
    }

    /// The bound address (with the OS-picked port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight requests finish within the shutdown grace, and waits
    /// for the server to end.
    ///
    /// # Errors
    /// An error returned by the server, or if its task panicked.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.shutdown.cancel();
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(format!(
                "admin http server task failed: {e}"
            ))),
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}
