//! The metrics endpoint against real clients: raw sockets (exact bytes, hostile clients), rustls clients pinned to
//! one TLS version, and two independent OpenSSL-based tools, curl and `openssl s_client` (Debian's OpenSSL can
//! still speak TLS 1.0/1.1, which rustls clients cannot).
//!
//! Every server binds 127.0.0.1:0. Certificates are made per test with rcgen and written next to a web config
//! that names them by relative paths, as an operator's file would. bcrypt hashes use the lowest cost so debug
//! builds stay fast. Waits have deadlines; nothing sleeps for a fixed time.

use std::{
    error::Error,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Output,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use netns_monitor::metrics::{HttpError, MetricsServer, Render, ServerOptions, WebConfig};
use netns_monitor_tests::unique_name;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    version::{TLS12, TLS13},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// Upper bound for anything the tests wait for; generous because two cores are shared with other builds.
const DEADLINE: Duration = Duration::from_secs(30);

const METRICS: &str = "# HELP netns_monitor_test_up A test series.\n# TYPE netns_monitor_test_up gauge\n\
                       netns_monitor_test_up 1\n";
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const PASSWORD: &str = "correct horse battery staple";

// ---------------------------------------------------------------------------------------------------------------
// Fixtures

/// A directory removed on drop, for certificates and web configs.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(unique_name("nsm-http-"));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self(path)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client certificate and key, as rustls wants them.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A test CA, a server certificate for localhost/127.0.0.1, a client certificate from the same CA and one from
/// another CA, all written as PEM files into one directory: `ca.pem`, `server.crt`, `server.key`, `client.crt`,
/// `client.key`.
struct Pki {
    dir: TempDir,
    ca: CertificateDer<'static>,
    client: Identity,
    stranger: Identity,
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate")
}

/// A leaf certificate signed by `issuer`; returns (certificate PEM, key PEM).
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

fn identity(cert_pem: &str, key_pem: &str) -> Identity {
    Identity {
        chain: vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("client cert PEM")],
        key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("client key PEM"),
    }
}

impl Pki {
    fn new() -> Self {
        let dir = TempDir::new();
        let ca = make_ca("netns-monitor test CA");
        let other = make_ca("someone else's CA");
        let (server_cert, server_key) = leaf(&ca, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf(&ca, &["prometheus"], ExtendedKeyUsagePurpose::ClientAuth);
        let (stranger_cert, stranger_key) = leaf(&other, &["mallory"], ExtendedKeyUsagePurpose::ClientAuth);
        dir.write("ca.pem", ca.pem());
        dir.write("server.crt", &server_cert);
        dir.write("server.key", &server_key);
        dir.write("client.crt", &client_cert);
        dir.write("client.key", &client_key);
        Self {
            ca: ca.der().clone(),
            client: identity(&client_cert, &client_key),
            stranger: identity(&stranger_cert, &stranger_key),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.0.join(name).display().to_string()
    }

    /// Writes `web.yml` with the server certificate (relative paths) plus `tls_extra` lines inside
    /// `tls_server_config` and `rest` after it, and loads it.
    fn web_config(&self, tls_extra: &str, rest: &str) -> WebConfig {
        let yaml = format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{tls_extra}{rest}");
        let path = self.dir.write("web.yml", yaml);
        WebConfig::load(&path).unwrap_or_else(|e| panic!("load {}: {}", path.display(), chain(&e)))
    }

    /// A rustls client trusting the test CA, limited to `versions`, optionally with a client certificate.
    fn client(&self, versions: &[&'static SupportedProtocolVersion], identity: Option<&Identity>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).expect("add CA");
        let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .expect("client versions")
            .with_root_certificates(roots);
        Arc::new(match identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key()).expect("client cert"),
        })
    }
}

/// A running server: its address and how to stop it.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), HttpError>>,
    scrapes: Arc<AtomicUsize>,
}

impl Server {
    /// Signals shutdown without waiting for `run` to return.
    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server and returns what `run` returned.
    async fn stop(mut self) -> Result<(), HttpError> {
        self.signal_stop();
        tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .expect("run did not return after shutdown")
            .expect("run panicked")
    }
}

/// Serves [`METRICS`], counting scrapes.
async fn serve(web: Option<WebConfig>, options: ServerOptions) -> Server {
    let scrapes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&scrapes);
    let render: Render = Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(METRICS.to_owned())
    });
    serve_with(web, options, render, scrapes).await
}

async fn serve_with(
    web: Option<WebConfig>,
    options: ServerOptions,
    render: Render,
    scrapes: Arc<AtomicUsize>,
) -> Server {
    let server =
        MetricsServer::bind_with(loopback(), web, options).await.unwrap_or_else(|e| panic!("bind: {}", chain(&e)));
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(render, async {
        let _ = stopped.await;
    }));
    Server { addr, stop: Some(stop), task, scrapes }
}

/// A render that tells `entered` it started, then blocks its (blocking-pool) thread until `release` fires; it
/// fails if not released within the deadline, so a test that wrongly depends on it finishing cannot pass.
fn blocking_render() -> (Render, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let release_rx = Mutex::new(release_rx);
    let render: Render = Arc::new(move || {
        let _ = entered_tx.lock().expect("lock").send(());
        match release_rx.lock().expect("lock").recv_timeout(DEADLINE) {
            Ok(()) => Ok(METRICS.to_owned()),
            Err(e) => Err(format!("the test never released render: {e}").into()),
        }
    });
    (render, entered_rx, release_tx)
}

/// Waits (off the async threads) for a blocking render to signal that it started.
async fn wait_entered(entered: mpsc::Receiver<()>) -> mpsc::Receiver<()> {
    tokio::task::spawn_blocking(move || {
        entered.recv_timeout(DEADLINE).expect("render was not called");
        entered
    })
    .await
    .expect("wait thread")
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The error and its causes on one line, as the agent would print them.
fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Polls `condition` until it holds; panics with `what` after the deadline.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client over any stream, so requests can be exactly what a test needs

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no header end in {text:?}"));
        let head = std::str::from_utf8(&raw[..end]).unwrap_or_else(|_| panic!("head is not UTF-8: {text:?}"));
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {text:?}"));
        let headers = lines
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap_or_else(|| panic!("bad header line {l:?}"));
                (name.to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        Self { status, headers, body: raw[end + 4..].to_vec() }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

/// A request that asks the server to close the connection after answering.
fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Everything the peer sends until it closes (a reset ends it too, keeping what arrived before).
async fn read_all<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let read = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the server did not close the connection in time");
    out
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out)).await.expect("no reply in time")?;
    Ok(out)
}

async fn http(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    Reply::parse(&exchange(&mut stream, request).await.expect("plain HTTP exchange"))
}

async fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(DEADLINE, TlsConnector::from(config).connect(name, tcp)).await.expect("handshake in time")
}

/// One request over TLS; the error is the handshake's or the exchange's (a TLS 1.3 server rejects a client
/// certificate after the client thinks the handshake is done, so that shows up on the first read).
async fn https(addr: SocketAddr, config: Arc<ClientConfig>, request: &[u8]) -> io::Result<(Reply, ProtocolVersion)> {
    let mut stream = tls_connect(addr, config).await?;
    let version = stream.get_ref().1.protocol_version().expect("negotiated version");
    let raw = exchange(&mut stream, request).await?;
    Ok((Reply::parse(&raw), version))
}

/// Reads one response on a kept-alive connection (up to its Content-Length).
async fn read_one_response<S: AsyncRead + Unpin>(stream: &mut S) -> Reply {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let reply = Reply::parse(&raw);
                let length: usize = reply.header("content-length").expect("content-length").parse().expect("length");
                if raw.len() >= end + 4 + length {
                    return;
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed mid-response: {:?}", String::from_utf8_lossy(&raw));
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no response in time");
    Reply::parse(&raw)
}

/// Runs a tool (curl, openssl) with a deadline.
async fn tool(program: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(program);
    command.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in time"))
        .unwrap_or_else(|e| panic!("cannot run {program} (Debian package; `cargo xtask setup --tests`): {e}"))
}

fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `openssl s_client` against `addr` with extra `args` (a protocol version flag...).
async fn s_client(pki: &Pki, addr: SocketAddr, args: &[&str]) -> Output {
    let connect = addr.to_string();
    let ca = pki.path("ca.pem");
    let mut all: Vec<&str> = vec!["s_client", "-connect", &connect, "-servername", "localhost", "-CAfile", &ca];
    all.extend_from_slice(args);
    tool("openssl", &all).await
}

/// The kernel's accept queue length of the listening socket on 127.0.0.1:`port` (`rx_queue` of a LISTEN entry
/// in /proc/net/tcp): connections the kernel completed that the server has not accepted.
fn accept_queue(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 4 && fields[1] == local && fields[3] == "0A" {
            let rx = fields[4].split(':').nth(1).expect("tx:rx");
            return usize::from_str_radix(rx, 16).expect("hex rx_queue");
        }
    }
    panic!("no listening socket on 127.0.0.1:{port} in /proc/net/tcp");
}

// ---------------------------------------------------------------------------------------------------------------
// Plain HTTP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_serves_metrics_index_and_errors() {
    let server = serve(None, ServerOptions::default()).await;
    let addr = server.addr;

    let reply = http(addr, &request("GET", "/metrics", &[])).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(METRICS_TYPE));
    assert_eq!(reply.text(), METRICS);

    let reply = http(addr, &request("GET", "/metrics?name[]=up", &[])).await;
    assert_eq!((reply.status, reply.text()), (200, METRICS), "a query string does not change the route");

    let reply = http(addr, &request("HEAD", "/metrics", &[])).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(METRICS_TYPE));
    assert_eq!(reply.header("content-length"), Some(METRICS.len().to_string().as_str()));
    assert!(reply.body.is_empty(), "HEAD has no body: {:?}", reply.text());

    let reply = http(addr, &request("GET", "/", &[])).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(reply.text().contains("<a href=\"metrics\">"), "{}", reply.text());

    for path in ["/nope", "/metrics/", "/metricsx", "//metrics"] {
        assert_eq!(http(addr, &request("GET", path, &[])).await.status, 404, "{path}");
    }
    for (method, path) in [("POST", "/metrics"), ("PUT", "/metrics"), ("DELETE", "/"), ("OPTIONS", "/metrics")] {
        let reply = http(addr, &request(method, path, &[])).await;
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method} {path}");
    }
    assert_eq!(server.scrapes.load(Ordering::SeqCst), 3, "GET, GET with a query and HEAD rendered; nothing else");

    // curl as an independent client.
    let url = format!("http://{addr}/metrics");
    let out = tool("curl", &["-sS", "--fail", &url]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), METRICS);

    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_gzipped_when_the_scraper_asks_and_only_then() {
    let server = serve(None, ServerOptions::default()).await;
    let addr = server.addr;

    // What Prometheus sends.
    let reply = http(addr, &request("GET", "/metrics", &[("Accept-Encoding", "gzip")])).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(reply.header("vary"), Some("Accept-Encoding"));
    assert_eq!(reply.header("content-type"), Some(METRICS_TYPE));
    assert_eq!(reply.body.get(..2), Some(&[0x1f, 0x8b][..]), "a gzip stream");
    // gzip(1) as an independent decoder.
    let dir = TempDir::new();
    let packed = dir.write("metrics.gz", &reply.body);
    let out = tool("gzip", &["-dc", &packed.display().to_string()]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), METRICS);

    for refused in ["gzip;q=0", "identity", "br, deflate"] {
        let reply = http(addr, &request("GET", "/metrics", &[("Accept-Encoding", refused)])).await;
        assert_eq!(reply.header("content-encoding"), None, "{refused}");
        assert_eq!(reply.header("vary"), Some("Accept-Encoding"), "{refused}");
        assert_eq!(reply.text(), METRICS, "{refused}");
    }

    // curl asks for and decodes it itself.
    let url = format!("http://{addr}/metrics");
    let out = tool("curl", &["-sS", "--fail", "--compressed", "-D", "-", &url]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.to_ascii_lowercase().contains("content-encoding: gzip"), "{text}");
    assert!(text.ends_with(METRICS), "{text}");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let server = serve(None, ServerOptions::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    for _ in 0..3 {
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
        let reply = read_one_response(&mut stream).await;
        assert_eq!((reply.status, reply.text()), (200, METRICS));
    }
    assert_eq!(server.scrapes.load(Ordering::SeqCst), 3);
    drop(stream);
    server.stop().await.expect("clean stop");
}

/// A current-thread runtime: if render ran on the async thread, blocking it would stall every connection,
/// including the index request below.
#[tokio::test]
async fn a_blocking_render_does_not_stall_the_server() {
    let (render, entered, release) = blocking_render();
    let server = serve_with(None, ServerOptions::default(), render, Arc::default()).await;
    let addr = server.addr;
    let scrape = tokio::spawn(async move { http(addr, &request("GET", "/metrics", &[])).await });
    let _entered = wait_entered(entered).await;

    let index = tokio::time::timeout(DEADLINE, http(addr, &request("GET", "/", &[]))).await.expect("index in time");
    assert_eq!(index.status, 200);

    release.send(()).expect("release render");
    let reply = scrape.await.expect("scrape task");
    assert_eq!((reply.status, reply.text()), (200, METRICS));
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_errors_and_panics_answer_500_and_the_server_goes_on() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let render: Render = Arc::new(move || match counter.fetch_add(1, Ordering::SeqCst) {
        0 => Err("the registry is broken".into()),
        1 => panic!("render panicked (on purpose, in a test)"),
        _ => Ok(METRICS.to_owned()),
    });
    let server = serve_with(None, ServerOptions::default(), render, Arc::default()).await;
    for expected in [500, 500, 200] {
        let reply = http(server.addr, &request("GET", "/metrics", &[])).await;
        assert_eq!(reply.status, expected, "{}", String::from_utf8_lossy(&reply.body));
        if expected == 500 {
            assert!(!reply.text().contains("registry is broken"), "internal errors stay in the log");
        }
    }
    server.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------------------------------------------------------
// TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_clients_are_served() {
    let pki = Pki::new();
    let server = serve(Some(pki.web_config("", "")), ServerOptions::default()).await;
    for (version, expected) in [(&TLS12, ProtocolVersion::TLSv1_2), (&TLS13, ProtocolVersion::TLSv1_3)] {
        let (reply, negotiated) = https(server.addr, pki.client(&[version], None), &request("GET", "/metrics", &[]))
            .await
            .unwrap_or_else(|e| panic!("{expected:?}: {e}"));
        assert_eq!(negotiated, expected);
        assert_eq!((reply.status, reply.text()), (200, METRICS), "{expected:?}");
    }

    // curl (OpenSSL), pinned to each version; -v reports what was negotiated.
    let port = server.addr.port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/metrics");
    let ca = pki.path("ca.pem");
    for (min, max) in [("--tlsv1.2", "1.2"), ("--tlsv1.3", "1.3")] {
        let out =
            tool("curl", &["-sS", "-v", "--fail", "--cacert", &ca, "--resolve", &resolve, min, "--tls-max", max, &url])
                .await;
        assert!(out.status.success(), "{}", output_text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), METRICS);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("SSL connection using TLSv{max}")), "{stderr}");
        assert!(stderr.contains("ALPN: server accepted http/1.1"), "{stderr}");
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_is_not_served() {
    let pki = Pki::new();
    let server = serve(Some(pki.web_config("", "")), ServerOptions::default()).await;

    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(&request("GET", "/metrics", &[])).await.expect("write");
    let raw = read_all(&mut stream).await;
    assert!(!raw.starts_with(b"HTTP/"), "plain HTTP was answered: {:?}", String::from_utf8_lossy(&raw));
    // rustls answers a non-TLS record with a TLS alert record (content type 21), or with nothing.
    assert!(raw.is_empty() || raw[0] == 21, "expected a TLS alert, got {raw:?}");

    let url = format!("http://{}/metrics", server.addr);
    let out = tool("curl", &["-sS", "--fail", &url]).await;
    assert!(!out.status.success(), "curl over plain HTTP succeeded: {}", output_text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("netns_monitor_test_up"));

    assert_eq!(server.scrapes.load(Ordering::SeqCst), 0);
    let (reply, _) = https(server.addr, pki.client(&[&TLS13], None), &request("GET", "/metrics", &[]))
        .await
        .expect("TLS still works");
    assert_eq!(reply.status, 200);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_0_and_1_1_handshakes_are_refused() {
    let pki = Pki::new();
    let server = serve(Some(pki.web_config("", "")), ServerOptions::default()).await;
    // OpenSSL 3 only offers TLS < 1.2 at security level 0; without it, s_client would refuse on its own and the
    // test would prove nothing about the server.
    for flag in ["-tls1", "-tls1_1"] {
        let out = s_client(&pki, server.addr, &[flag, "-cipher", "DEFAULT:@SECLEVEL=0"]).await;
        let text = output_text(&out);
        assert!(!out.status.success(), "{flag} handshake succeeded: {text}");
        // The refusal is a fatal alert from the server. rustls 0.23 answers handshake_failure (40): it requires
        // the signature_algorithms extension, which TLS 1.0/1.1 ClientHellos lack, before it looks at the
        // version; protocol_version (70) would be as good.
        assert!(
            text.contains("SSL alert number 70") || text.contains("SSL alert number 40"),
            "{flag}: the server must refuse with a TLS alert: {text}"
        );
        assert!(!text.contains("New, TLSv1"), "{flag}: {text}");
    }
    // The same tool and options, at TLS 1.2, get through: the refusals above are the server's.
    let out = s_client(&pki, server.addr, &["-tls1_2", "-cipher", "DEFAULT:@SECLEVEL=0"]).await;
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("New, TLSv1.2") && text.contains("Verify return code: 0 (ok)"), "{text}");
    assert_eq!(server.scrapes.load(Ordering::SeqCst), 0);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_tls13_refuses_tls12() {
    let pki = Pki::new();
    let server = serve(Some(pki.web_config("  min_version: TLS13\n", "")), ServerOptions::default()).await;
    let refused = https(server.addr, pki.client(&[&TLS12], None), &request("GET", "/metrics", &[])).await;
    let error = refused.expect_err("a TLS 1.2 client must be refused");
    assert!(error.to_string().contains("ProtocolVersion"), "{error}");
    let out = s_client(&pki, server.addr, &["-tls1_2"]).await;
    assert!(output_text(&out).contains("alert protocol version"), "{}", output_text(&out));

    let (reply, version) =
        https(server.addr, pki.client(&[&TLS13], None), &request("GET", "/metrics", &[])).await.expect("TLS 1.3");
    assert_eq!((reply.status, version), (200, ProtocolVersion::TLSv1_3));
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_version_tls12_refuses_tls13() {
    let pki = Pki::new();
    let server = serve(Some(pki.web_config("  max_version: TLS12\n", "")), ServerOptions::default()).await;
    let refused = https(server.addr, pki.client(&[&TLS13], None), &request("GET", "/metrics", &[])).await;
    assert!(refused.is_err(), "a TLS 1.3-only client must be refused");
    let (reply, version) = https(server.addr, pki.client(&[&TLS12, &TLS13], None), &request("GET", "/metrics", &[]))
        .await
        .expect("TLS 1.2");
    assert_eq!((reply.status, version), (200, ProtocolVersion::TLSv1_2), "a client offering both gets 1.2");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_verified() {
    let pki = Pki::new();
    let web = pki.web_config("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n", "");
    let server = serve(Some(web), ServerOptions::default()).await;
    for version in [&TLS12, &TLS13] {
        let (reply, _) =
            https(server.addr, pki.client(&[version], Some(&pki.client)), &request("GET", "/metrics", &[]))
                .await
                .unwrap_or_else(|e| panic!("{:?} with a good client certificate: {e}", version.version));
        assert_eq!(reply.status, 200);
        let without = https(server.addr, pki.client(&[version], None), &request("GET", "/metrics", &[])).await;
        assert!(without.is_err(), "{:?} without a client certificate: {without:?}", version.version);
        let stranger =
            https(server.addr, pki.client(&[version], Some(&pki.stranger)), &request("GET", "/metrics", &[])).await;
        assert!(stranger.is_err(), "{:?} with another CA's certificate: {stranger:?}", version.version);
    }
    assert_eq!(server.scrapes.load(Ordering::SeqCst), 2, "only the verified clients were served");

    // curl with the client certificate, as an independent client.
    let port = server.addr.port();
    let (resolve, url) = (format!("localhost:{port}:127.0.0.1"), format!("https://localhost:{port}/metrics"));
    let (ca, cert, key) = (pki.path("ca.pem"), pki.path("client.crt"), pki.path("client.key"));
    let out =
        tool("curl", &["-sS", "--fail", "--cacert", &ca, "--cert", &cert, "--key", &key, "--resolve", &resolve, &url])
            .await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), METRICS);
    server.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------------------------------------------------------
// Basic auth and headers

fn users_yaml() -> String {
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    format!("basic_auth_users:\n  prometheus: '{hash}'\n")
}

const HEADERS_YAML: &str = "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    \
                            Strict-Transport-Security: max-age=63072000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_extra_headers() {
    let dir = TempDir::new();
    let path = dir.write("web.yml", format!("{}{HEADERS_YAML}", users_yaml()));
    let web = WebConfig::load(&path).unwrap_or_else(|e| panic!("{}", chain(&e)));
    let server = serve(Some(web), ServerOptions::default()).await;
    let addr = server.addr;
    let challenge = Some("Basic realm=\"netns-monitor\"");

    let cases: [(&str, Option<String>, u16); 8] = [
        ("/metrics", None, 401),
        ("/nope", None, 401),
        ("/metrics", Some(basic("prometheus", "wrong")), 401),
        ("/metrics", Some(basic("nobody", PASSWORD)), 401),
        ("/metrics", Some(basic("prometheus", "")), 401),
        ("/metrics", Some("Bearer abc".to_owned()), 401),
        ("/metrics", Some(basic("prometheus", PASSWORD)), 200),
        ("/nope", Some(basic("prometheus", PASSWORD)), 404),
    ];
    for (path, credentials, status) in cases {
        let headers: Vec<(&str, &str)> = credentials.iter().map(|c| ("Authorization", c.as_str())).collect();
        let reply = http(addr, &request("GET", path, &headers)).await;
        assert_eq!(reply.status, status, "{path} {credentials:?}");
        if status == 401 {
            assert_eq!(reply.header("www-authenticate"), challenge, "{path} {credentials:?}");
        } else {
            assert_eq!(reply.header("www-authenticate"), None);
        }
        if status == 200 {
            assert_eq!(reply.text(), METRICS);
        }
        assert_eq!(reply.header("x-frame-options"), Some("deny"), "extra headers on every response ({status})");
        assert_eq!(reply.header("strict-transport-security"), Some("max-age=63072000"));
    }
    // Cached or not, the right password keeps working and the wrong one keeps failing.
    let credentials = basic("prometheus", PASSWORD);
    assert_eq!(http(addr, &request("GET", "/metrics", &[("Authorization", &credentials)])).await.status, 200);
    let wrong = basic("prometheus", "wrong");
    assert_eq!(http(addr, &request("GET", "/metrics", &[("Authorization", &wrong)])).await.status, 401);
    assert_eq!(server.scrapes.load(Ordering::SeqCst), 2, "401s never reach render");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_over_tls_with_curl() {
    let pki = Pki::new();
    let server = serve(Some(pki.web_config("", &users_yaml())), ServerOptions::default()).await;
    let port = server.addr.port();
    let (resolve, url, ca) =
        (format!("localhost:{port}:127.0.0.1"), format!("https://localhost:{port}/metrics"), pki.path("ca.pem"));
    let base = ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca.as_str(), "--resolve", resolve.as_str()];

    let out = tool("curl", &[&base[..], &[url.as_str()]].concat()).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401", "{}", output_text(&out));
    let wrong = "prometheus:wrong".to_owned();
    let out = tool("curl", &[&base[..], &["-u", &wrong, url.as_str()]].concat()).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401", "{}", output_text(&out));
    let right = format!("prometheus:{PASSWORD}");
    let out = tool("curl", &["-sS", "--fail", "--cacert", &ca, "--resolve", &resolve, "-u", &right, &url]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), METRICS);
    server.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_too_many_headers_are_refused_and_the_server_goes_on() {
    let server = serve(None, ServerOptions::default()).await;

    // 1 MiB in one header. The server answers 431 and closes after reading its 16 KiB limit; the kernel may then
    // reset the connection (we are still sending), and the 431 can be lost with it. Either way: not served.
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let mut huge = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    huge.resize(huge.len() + (1 << 20), b'a');
    huge.extend_from_slice(b"\r\n\r\n");
    let (mut reader, mut writer) = stream.split();
    let (_, raw) = tokio::join!(async { writer.write_all(&huge).await }, read_all(&mut reader));
    assert!(
        raw.is_empty() || raw.starts_with(b"HTTP/1.1 431 "),
        "a 1 MiB header must get 431 or a closed connection, got {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(200)])
    );

    // 32 KiB: over our 16 KiB limit, though well under hyper's own default (~400 KiB).
    let big = "a".repeat(32 * 1024);
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.split();
    let sent = request("GET", "/metrics", &[("X-Big", &big)]);
    let (_, raw) = tokio::join!(async { writer.write_all(&sent).await }, read_all(&mut reader));
    assert!(
        raw.is_empty() || raw.starts_with(b"HTTP/1.1 431 "),
        "a 32 KiB header must get 431 or a closed connection, got {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(200)])
    );

    // Too many headers (80: over our 64, under hyper's default 100) in a small request: the server reads it
    // all, so the 431 arrives.
    let many: Vec<(String, String)> = (0..80).map(|i| (format!("X-H{i}"), "v".to_owned())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(http(server.addr, &request("GET", "/metrics", &many)).await.status, 431);

    // Just under the limits is fine.
    let fine = "a".repeat(8 * 1024);
    let reply = http(server.addr, &request("GET", "/metrics", &[("X-Big", &fine)])).await;
    assert_eq!((reply.status, reply.text()), (200, METRICS));
    assert_eq!(server.scrapes.load(Ordering::SeqCst), 1);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_never_read() {
    let server = serve(None, ServerOptions::default()).await;
    // A client announcing 1 GiB (and sending none of it) gets its answer and the connection is closed, rather
    // than the server waiting for (or buffering) the body.
    for (method, path, status) in [("POST", "/metrics", 405), ("GET", "/metrics", 200)] {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1073741824\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let raw = read_all(&mut stream).await;
        assert_eq!(Reply::parse(&raw).status, status, "{method} {path}");
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_disconnected_after_the_header_timeout() {
    let timeout = Duration::from_millis(500);
    let options = ServerOptions { header_read_timeout: timeout, tls_handshake_timeout: timeout, ..Default::default() };
    let server = serve(None, options.clone()).await;

    for (what, first_bytes) in
        [("unfinished headers", &b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n"[..]), ("nothing at all", &b""[..])]
    {
        let started = Instant::now();
        let mut slow = TcpStream::connect(server.addr).await.expect("connect");
        slow.write_all(first_bytes).await.expect("write");
        // Meanwhile the server serves others.
        assert_eq!(http(server.addr, &request("GET", "/metrics", &[])).await.status, 200);
        let raw = read_all(&mut slow).await;
        let elapsed = started.elapsed();
        assert!(raw.is_empty(), "{what}: nothing is sent to a client that never finished: {raw:?}");
        // Upper bound: hyper's default (30 s) would not do; the margin is for a loaded machine.
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_secs(10),
            "{what}: closed after {elapsed:?}, not at the {timeout:?} timeout"
        );
    }

    // An idle keep-alive connection is closed the same way after its request was served.
    // Its timer starts after the response is written, so after `started`.
    let started = Instant::now();
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
    assert_eq!(read_one_response(&mut idle).await.status, 200);
    assert!(read_all(&mut idle).await.is_empty());
    assert!(started.elapsed() >= timeout, "closed after {:?}", started.elapsed());
    server.stop().await.expect("clean stop");

    // A TLS client that never sends its ClientHello.
    let pki = Pki::new();
    let server = serve(Some(pki.web_config("", "")), options).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let raw = read_all(&mut silent).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout && elapsed < timeout + Duration::from_secs(10), "TLS handshake cut after {elapsed:?}");
    assert!(raw.is_empty(), "{raw:?}");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_a_slot_frees() {
    let options = ServerOptions { max_connections: 2, header_read_timeout: DEADLINE * 2, ..Default::default() };
    let server = serve(None, options).await;
    let port = server.addr.port();
    let keep_alive = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";

    // Two kept-alive connections, each proven accepted by a served request: both slots are taken.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream.write_all(keep_alive).await.expect("write");
        assert_eq!(read_one_response(&mut stream).await.status, 200);
        held.push(stream);
    }

    // A third connection completes in the kernel but stays in the accept queue...
    let mut third = TcpStream::connect(server.addr).await.expect("connect");
    third.write_all(&request("GET", "/metrics", &[])).await.expect("write");
    wait_until("the third connection waits in the accept queue", || accept_queue(port) == 1).await;
    // ...even while the server is busy serving the held connections (so it had every chance to accept it).
    held[1].write_all(keep_alive).await.expect("write");
    assert_eq!(read_one_response(&mut held[1]).await.status, 200);
    assert_eq!(accept_queue(port), 1, "the server accepted a connection beyond its cap");

    // Closing one held connection frees a slot, and the third is served.
    drop(held.remove(0));
    let reply = Reply::parse(&read_all(&mut third).await);
    assert_eq!((reply.status, reply.text()), (200, METRICS));
    assert_eq!(accept_queue(port), 0);
    drop(held);
    server.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------------------------------------------------------
// Shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_lets_the_request_in_flight_finish() {
    let (render, entered, release) = blocking_render();
    let mut server = serve_with(None, ServerOptions::default(), render, Arc::default()).await;
    let addr = server.addr;
    let scrape = tokio::spawn(async move { http(addr, &request("GET", "/metrics", &[])).await });
    let _entered = wait_entered(entered).await;

    server.signal_stop();
    // The listener is closed: new connections are refused by the kernel.
    wait_until("new connections are refused", || {
        std::net::TcpStream::connect(addr).is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
    })
    .await;
    assert!(!server.task.is_finished(), "run returned while a request was in flight");

    release.send(()).expect("release render");
    let reply = scrape.await.expect("scrape task");
    assert_eq!((reply.status, reply.text()), (200, METRICS), "the request in flight is answered in full");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_no_longer_than_the_grace_period() {
    let grace = Duration::from_millis(300);
    let (render, entered, release) = blocking_render();
    let options = ServerOptions { shutdown_grace: grace, ..Default::default() };
    let server = serve_with(None, options, render, Arc::default()).await;
    let mut stuck = TcpStream::connect(server.addr).await.expect("connect");
    stuck.write_all(&request("GET", "/metrics", &[])).await.expect("write");
    let _entered = wait_entered(entered).await;

    let started = Instant::now();
    server.stop().await.expect("run returns Ok after the grace period");
    let waited = started.elapsed();
    assert!(waited >= grace, "run returned after {waited:?}, before the {grace:?} grace period");
    let raw = read_all(&mut stuck).await;
    assert!(raw.is_empty(), "the stuck request's connection is dropped unanswered: {raw:?}");
    let _ = release.send(());
}

// ---------------------------------------------------------------------------------------------------------------
// Start-up failures

/// What the agent will do with `--web-config.file PATH`: load it, then bind. The error chain as one line.
async fn start(path: &Path) -> Result<MetricsServer, String> {
    let web = WebConfig::load(path).map_err(|e| chain(&e))?;
    MetricsServer::bind(loopback(), Some(web)).await.map_err(|e| chain(&e))
}

async fn assert_start_fails(pki: &Pki, yaml: &str, words: &[&str]) {
    let path = pki.dir.write("bad.yml", yaml);
    let error = start(&path).await.err().unwrap_or_else(|| panic!("started with:\n{yaml}"));
    for word in words {
        assert!(error.contains(word), "{error:?} does not mention {word:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_web_configs_fail_start_up_naming_the_problem() {
    let pki = Pki::new();
    let config = pki.path("bad.yml");
    let missing = pki.path("missing.crt");

    // Parsed fine, fails when bind reads the files.
    let yaml = "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n";
    assert_start_fails(&pki, yaml, &[&config, "TLS", "cert_file", &missing, "No such file"]).await;
    let yaml = "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n";
    assert_start_fails(&pki, yaml, &["cannot be used together", &pki.path("server.crt"), &pki.path("client.key")])
        .await;
    let yaml = "tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n";
    assert_start_fails(&pki, yaml, &["cert_file", &pki.path("server.key"), "no PEM certificate"]).await;
    let yaml = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n";
    assert_start_fails(&pki, yaml, &["key_file", "private key"]).await;
    let yaml = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.key\n";
    assert_start_fails(&pki, yaml, &["client_ca_file", &pki.path("server.key")]).await;

    // Refused when the file is read.
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    assert_start_fails(&pki, &format!("{tls}  cert_fiel: x\n"), &[&config, "unknown field `cert_fiel`"]).await;
    assert_start_fails(&pki, &format!("{tls}  min_version: TLS11\n"), &[&config, "min_version TLS11", "not supported"])
        .await;
    assert_start_fails(&pki, &format!("{tls}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"), &[&config, "cipher_suites"])
        .await;
    assert_start_fails(
        &pki,
        "basic_auth_users:\n  prometheus: hunter2\n",
        &[&config, "basic_auth_users.prometheus", "bcrypt"],
    )
    .await;
    let absent = pki.path("absent.yml");
    let error = start(Path::new(&absent)).await.err().expect("a missing web config fails");
    assert!(error.contains(&absent) && error.contains("No such file"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_fails_bind_naming_it() {
    let taken = std::net::TcpListener::bind(loopback()).expect("bind");
    let addr = taken.local_addr().expect("addr");
    let error = MetricsServer::bind(addr, None).await.err().expect("binding a taken port must fail");
    let text = chain(&error);
    assert!(text.contains(&addr.to_string()) && text.contains("in use"), "{text}");
}
