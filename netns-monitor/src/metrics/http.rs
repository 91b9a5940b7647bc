//! The `/metrics` HTTP(S) endpoint.
//!
//! [`MetricsServer::bind`] does everything that can fail because of the operator's input (the address, the
//! certificate files) so that start-up fails with the reason; [`MetricsServer::run`] then serves until its
//! shutdown future resolves, as in mini-redis (`run(listener, shutdown)`), so tests drive it.
//!
//! Hostile or broken clients are bounded: a connection cap (further connections wait in the kernel's accept
//! queue), a time limit on the TLS handshake and on reading each request's headers (slowloris; it also closes
//! idle keep-alive connections), caps on header bytes and count (hyper answers 431 and closes), and request
//! bodies are never read. HTTP/1.1 only.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderName, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;

use crate::metrics::{
    auth::{AuthError, BasicAuth, Verdict},
    tls::{self, TlsError},
    webconfig::WebConfig,
};

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The `WWW-Authenticate` challenge sent with every 401.
pub const AUTH_CHALLENGE: &str = "Basic realm=\"netns-monitor\"";

/// Produces the exposition text for one scrape. Called on a blocking thread (it may read maps, walk /proc...).
/// An error answers the scrape with 500, so Prometheus records the target as down instead of storing a partial
/// or empty scrape.
pub type Render = Arc<dyn Fn() -> Result<String, Box<dyn std::error::Error + Send + Sync>> + Send + Sync>;

const INDEX_HTML: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>netns-monitor</title></head>\n\
<body><h1>netns-monitor</h1><p><a href=\"metrics\">Metrics</a></p></body></html>\n";

/// Limits and timeouts; [`Default`] is what the agent uses.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Connections served at once; more wait in the accept queue until one closes.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from when the server starts waiting for them
    /// (also closes keep-alive connections idle that long).
    pub header_read_timeout: Duration,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Bytes of request line plus headers; beyond this the answer is 431 and the connection is closed.
    pub max_header_bytes: usize,
    /// Number of request headers; beyond this the answer is 431 and the connection is closed.
    pub max_headers: usize,
    /// On shutdown, how long in-flight requests may take before their connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            // A Prometheus server or two, their HA twins, and someone with curl.
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            // Scrape requests carry a handful of short headers; browsers stay well below this too.
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why the endpoint could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr} for the metrics endpoint")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("TLS set-up from web config {} failed", path.display())]
    Tls {
        path: std::path::PathBuf,
        #[source]
        source: TlsError,
    },
    #[error("basic auth set-up from web config {} failed", path.display())]
    Auth {
        path: std::path::PathBuf,
        #[source]
        source: AuthError,
    },
    #[error("invalid server option: {0}")]
    Options(&'static str),
    #[error("accepting connections on {addr} failed")]
    Accept {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// A listening, non-blocking TCP socket as tokio's `TcpListener::bind` makes it: `SO_REUSEADDR` (a restarted
/// agent can bind while connections of the previous one linger in TIME_WAIT) and a backlog of 1024.
fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket, sockopt,
    };
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(1024).map_err(io::Error::from)?)?;
    Ok(std::net::TcpListener::from(fd))
}

/// A bound metrics endpoint, not yet serving.
pub struct MetricsServer {
    /// A std listener, so binding needs no async runtime (the agent binds before it starts one, see
    /// `crate::privileges`); registered with the runtime when [`Self::run`] starts.
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    auth: Option<BasicAuth>,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
    options: ServerOptions,
}

impl MetricsServer {
    /// Binds `addr` with the default [`ServerOptions`]; `web` adds TLS, basic auth and headers.
    pub async fn bind(addr: SocketAddr, web: Option<WebConfig>) -> Result<Self, HttpError> {
        Self::bind_with(addr, web, ServerOptions::default()).await
    }

    /// Binds `addr` and loads the certificate files now, so a bad address or certificate fails start-up.
    pub async fn bind_with(
        addr: SocketAddr,
        web: Option<WebConfig>,
        options: ServerOptions,
    ) -> Result<Self, HttpError> {
        Self::bind_now(addr, web, options)
    }

    /// [`Self::bind_with`] without an async runtime: everything it does is synchronous.
    #[expect(
        clippy::result_large_err,
        reason = "called once at start-up; HttpError is the same type bind_with has always returned"
    )]
    pub fn bind_now(addr: SocketAddr, web: Option<WebConfig>, options: ServerOptions) -> Result<Self, HttpError> {
        if options.max_connections == 0 {
            return Err(HttpError::Options("max_connections must be at least 1"));
        }
        if options.max_headers == 0 || options.max_header_bytes == 0 {
            return Err(HttpError::Options("max_headers and max_header_bytes must be at least 1"));
        }
        let (tls, auth, extra_headers) = match web {
            None => (None, None, Vec::new()),
            Some(web) => {
                let tls = match &web.tls {
                    None => None,
                    Some(config) => Some(TlsAcceptor::from(
                        tls::server_config(config)
                            .map_err(|source| HttpError::Tls { path: web.path.clone(), source })?,
                    )),
                };
                let auth = if web.users.is_empty() {
                    None
                } else {
                    Some(
                        BasicAuth::new(web.users)
                            .map_err(|source| HttpError::Auth { path: web.path.clone(), source })?,
                    )
                };
                if web.http.http2 {
                    tracing::info!(
                        web_config = %web.path.display(),
                        "http_server_config.http2 is true; the metrics endpoint serves HTTP/1.1 only"
                    );
                }
                (tls, auth, web.http.headers)
            }
        };
        if auth.is_some() && tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "basic auth without TLS on a non-loopback address: passwords cross the network in clear text"
            );
        }
        let listener = listen(addr).map_err(|source| HttpError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
        Ok(Self { listener, local_addr, tls, auth, extra_headers, options })
    }

    /// The address actually bound (the port is known here when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish for up to
    /// [`ServerOptions::shutdown_grace`] and drops what is left.
    pub async fn run(self, render: Render, shutdown: impl Future<Output = ()>) -> Result<(), HttpError> {
        let MetricsServer { listener, local_addr, tls, auth, extra_headers, options } = self;
        let listener =
            TcpListener::from_std(listener).map_err(|source| HttpError::Bind { addr: local_addr, source })?;
        tracing::info!(
            addr = %local_addr,
            tls = tls.is_some(),
            basic_auth = auth.is_some(),
            "metrics endpoint listening"
        );
        let shared = Arc::new(Shared { render, auth, extra_headers });
        let slots = Arc::new(Semaphore::new(options.max_connections));
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);

        let result = loop {
            while let Some(finished) = connections.try_join_next() {
                if let Err(error) = finished {
                    tracing::error!(error = %error, "a metrics connection task failed");
                }
            }
            // Take a connection slot before accepting: when all are taken, new clients wait in the kernel's
            // accept queue (and time out on their side) instead of costing us memory.
            let slot = tokio::select! {
                () = &mut shutdown => break Ok(()),
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    // Only a closed semaphore fails, and nothing closes this one.
                    Err(_) => break Ok(()),
                },
            };
            let accepted = tokio::select! {
                () = &mut shutdown => break Ok(()),
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let connection =
                        Connection { shared: Arc::clone(&shared), tls: tls.clone(), options: options.clone(), peer };
                    connections.spawn(connection.serve(stream, graceful.watcher(), slot));
                }
                Err(error) => match accept_error_kind(&error) {
                    AcceptError::Connection => tracing::debug!(error = %error, "a connection failed before accept"),
                    AcceptError::Resources => {
                        tracing::warn!(error = %error, "cannot accept connections (out of resources); retrying");
                        // Back off so that a full fd table does not spin this loop.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    AcceptError::Fatal => break Err(HttpError::Accept { addr: local_addr, source: error }),
                },
            }
        };

        drop(listener);
        let in_flight = graceful.count();
        tracing::info!(addr = %local_addr, connections = in_flight, "metrics endpoint stopping");
        if tokio::time::timeout(options.shutdown_grace, graceful.shutdown()).await.is_err() {
            tracing::warn!(
                grace = ?options.shutdown_grace,
                "connections still open after the shutdown grace period; dropping them"
            );
        }
        // Dropping the set aborts whatever is left (connections still in their TLS handshake included).
        connections.shutdown().await;
        result
    }
}

/// How to react to an `accept()` error.
#[derive(Debug, PartialEq, Eq)]
enum AcceptError {
    /// That one connection failed (reset or aborted before we took it): carry on.
    Connection,
    /// The process or system is short of something (fds, memory): wait a little, then carry on.
    Resources,
    /// The listening socket itself is broken: stop serving.
    Fatal,
}

fn accept_error_kind(error: &io::Error) -> AcceptError {
    match error.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => AcceptError::Resources,
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT) => AcceptError::Fatal,
        // ECONNABORTED, EPROTO, EPERM (firewall), ETIMEDOUT, EINTR and anything new: a per-connection failure.
        _ => AcceptError::Connection,
    }
}

/// What every connection shares.
struct Shared {
    render: Render,
    auth: Option<BasicAuth>,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
}

struct Connection {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    options: ServerOptions,
    peer: SocketAddr,
}

impl Connection {
    /// Serves one connection; `_slot` frees its place under the connection cap when this returns.
    async fn serve(self, stream: TcpStream, watcher: Watcher, _slot: OwnedSemaphorePermit) {
        let peer = self.peer;
        // Scrapes are request/response: send each response without waiting for more data to batch.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %error, "cannot set TCP_NODELAY");
        }
        match self.tls.clone() {
            None => self.serve_http(stream, watcher).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.options.tls_handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => self.serve_http(stream, watcher).await,
                    // Plain HTTP sent to the TLS port, old protocol versions, missing client certificates...
                    Ok(Err(error)) => tracing::debug!(%peer, error = %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve_http<S>(self, stream: S, watcher: Watcher)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let shared = self.shared;
        let service = service_fn(move |request| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(shared.respond(request, peer).await) }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.options.header_read_timeout)
            .max_header_size(self.options.max_header_bytes)
            .max_headers(self.options.max_headers);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        if let Err(error) = watcher.watch(connection).await {
            // Timeouts, oversized headers (after the 431), resets: the client's problem, not ours.
            tracing::debug!(%peer, error = %error, "connection ended with an error");
        }
    }
}

impl Shared {
    async fn respond(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let gzip = super::encoding::accepts_gzip(request.headers().get(header::ACCEPT_ENCODING).map(|v| v.as_bytes()));
        let mut response = match self.authorize(&request, peer).await {
            Some(denied) => denied,
            None => self.route(&method, &path, gzip).await,
        };
        for (name, value) in &self.extra_headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        tracing::debug!(
            %peer, %method, path, status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64, "request"
        );
        response
    }

    /// `None` when the request may go on; else the 401 to send. Every path is protected, so an unauthenticated
    /// client learns nothing, not even which paths exist.
    async fn authorize(&self, request: &Request<Incoming>, peer: SocketAddr) -> Option<Response<Full<Bytes>>> {
        let auth = self.auth.as_ref()?;
        let header = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
        match auth.check(header).await {
            Verdict::Allowed => return None,
            Verdict::Missing => tracing::debug!(%peer, "request without basic auth credentials"),
            Verdict::Denied => tracing::warn!(%peer, "wrong basic auth credentials"),
        }
        let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(AUTH_CHALLENGE));
        Some(response)
    }

    /// `gzip`: whether the client accepts a gzipped `/metrics`.
    async fn route(&self, method: &Method, path: &str, gzip: bool) -> Response<Full<Bytes>> {
        let readable = *method == Method::GET || *method == Method::HEAD;
        match path {
            "/metrics" | "/" if !readable => {
                let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                response
            }
            "/metrics" => self.metrics(gzip).await,
            "/" => with_type(
                Response::new(Full::new(Bytes::from_static(INDEX_HTML.as_bytes()))),
                "text/html; charset=utf-8",
            ),
            _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    }

    async fn metrics(&self, gzip: bool) -> Response<Full<Bytes>> {
        let render = Arc::clone(&self.render);
        // Rendering and compressing are CPU work: both off the async threads.
        let rendered = tokio::task::spawn_blocking(move || {
            let body = render()?;
            if !gzip {
                return Ok((Bytes::from(body), false));
            }
            let packed = super::encoding::gzip(body.as_bytes())?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((Bytes::from(packed), true))
        });
        match rendered.await {
            Ok(Ok((body, gzipped))) => {
                let mut response = with_type(Response::new(Full::new(body)), METRICS_CONTENT_TYPE);
                let headers = response.headers_mut();
                // Caches must not hand a gzipped body to a client that did not ask for one, or the reverse.
                headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
                if gzipped {
                    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                response
            }
            Ok(Err(error)) => {
                tracing::error!(error = %error, "collecting metrics failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "collecting metrics failed; see the agent's log\n")
            }
            Err(error) => {
                tracing::error!(error = %error, "collecting metrics panicked");
                text(StatusCode::INTERNAL_SERVER_ERROR, "collecting metrics failed; see the agent's log\n")
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response =
        with_type(Response::new(Full::new(Bytes::from_static(body.as_bytes()))), "text/plain; charset=utf-8");
    *response.status_mut() = status;
    response
}

fn with_type(mut response: Response<Full<Bytes>>, content_type: &'static str) -> Response<Full<Bytes>> {
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(accept_error_kind(&os(libc::ECONNABORTED)), AcceptError::Connection);
        assert_eq!(accept_error_kind(&os(libc::EPERM)), AcceptError::Connection);
        assert_eq!(accept_error_kind(&os(libc::EMFILE)), AcceptError::Resources);
        assert_eq!(accept_error_kind(&os(libc::ENFILE)), AcceptError::Resources);
        assert_eq!(accept_error_kind(&os(libc::EBADF)), AcceptError::Fatal);
        assert_eq!(accept_error_kind(&os(libc::EINVAL)), AcceptError::Fatal);
    }

    #[tokio::test]
    async fn bad_options_are_refused() {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let options = ServerOptions { max_connections: 0, ..ServerOptions::default() };
        let error = MetricsServer::bind_with(addr, None, options).await.err().expect("max_connections 0 is refused");
        assert!(error.to_string().contains("max_connections"), "{error}");
    }
}
