//! The agent's `/metrics` as Prometheus sees it: the exposition passes `promtool check metrics`, a real
//! Prometheus scraping the agent computes the per-namespace rate of traffic the test generates, TLS and basic
//! auth keep unauthenticated scrapers out, and a bad web config stops the agent before it loads anything.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use netns_monitor_tests::{
    agent::{AgentProcess, PinDir, VethPair},
    cli_command,
    monitoring::{
        TempDir, free_port, http,
        prometheus::{self, Prometheus},
        require_program,
    },
    netns::{addr, in_named, port},
    require_root,
};

const DEADLINE: Duration = Duration::from_secs(60);
/// Datagram payload and what one costs on the wire (payload + UDP + IPv4 + Ethernet headers).
const PAYLOAD: usize = 1000;
const FRAME: u64 = PAYLOAD as u64 + 8 + 20 + 14;

fn listen_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// A paced UDP sender from A to B until dropped; tracks how many datagrams it sent and since when.
struct Sender {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    _receiver: UdpSocket,
}

impl Sender {
    fn start(pair: &VethPair, udp_port: u16, per_second: u64) -> Self {
        let target = addr(&format!("{}.2", pair.net), udp_port);
        let receiver = in_named(&pair.b, move || UdpSocket::bind(target).expect("bind in B"));
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let a = pair.a.clone();
        let thread = {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            std::thread::spawn(move || {
                in_named(&a, move || {
                    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        // Paced against the clock, not by sleeping a fixed step: the average rate stays exact.
                        let due = start.elapsed().as_secs_f64() * per_second as f64;
                        while (sent.load(Ordering::Relaxed) as f64) < due {
                            socket.send_to(&[3u8; PAYLOAD], target).unwrap();
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
        };
        Self { stop, sent, thread: Some(thread), _receiver: receiver }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_computes_the_per_netns_rate() {
    require_root();
    let listen = listen_addr();
    let agent = AgentProcess::start(&["--listen", &listen.to_string()]).await;
    let pair = VethPair::new(51);
    let b = pair.inode(&pair.b);
    agent.wait_counting(b, &pair.vb, DEADLINE);
    const PER_SECOND: u64 = 400;
    let sender = Sender::start(&pair, port(51), PER_SECOND);

    // The exposition itself is valid, with the namespace's traffic series in it (once the agent has published
    // the interface it just attached).
    let series = format!("netns_monitor_netns_receive_bytes_total{{name=\"{}\",netns=\"{b}\"}}", pair.b);
    let started = Instant::now();
    let scrape = loop {
        let scrape = http::get(listen, "/metrics", Duration::from_secs(10)).expect("scrape");
        assert_eq!(scrape.status, 200);
        if scrape.body.contains(&series) {
            break scrape;
        }
        assert!(started.elapsed() < DEADLINE, "no {series} in the scrape");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let promtool = require_program("promtool", "prometheus");
    let check =
        std::process::Command::new(promtool).args(["check", "metrics"]).output_with_stdin(scrape.body.as_bytes());
    assert!(
        check.status.success() && check.stdout.is_empty() && check.stderr.is_empty(),
        "promtool found problems: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // A real Prometheus scraping every second.
    let prometheus = Prometheus::start(&prometheus::config("netns-monitor", listen, &[]));
    let query = format!("rate(netns_monitor_netns_receive_bytes_total{{netns=\"{b}\"}}[5s])");
    let expected = (PER_SECOND * FRAME) as f64;
    let started = Instant::now();
    let mut last = None;
    loop {
        // Enough samples for the 5 s window, then the rate must settle near what the sender sends.
        if started.elapsed() > Duration::from_secs(7) {
            last = prometheus.value(&query);
            if last.is_some_and(|rate| (rate - expected).abs() / expected < 0.2) {
                break;
            }
        }
        assert!(started.elapsed() < DEADLINE, "{query} = {last:?}, expected about {expected} bytes/s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sent = sender.sent.load(Ordering::Relaxed);
    assert!(sent > PER_SECOND * 5, "the sender kept sending ({sent})");
    // The per-interface and per-namespace series agree with each other.
    let per_iface = prometheus
        .value(&format!("sum(netns_monitor_network_receive_bytes_total{{netns=\"{b}\"}})"))
        .expect("interface series");
    let per_ns = prometheus.value(&format!("netns_monitor_netns_receive_bytes_total{{netns=\"{b}\"}}")).unwrap();
    assert_eq!(per_iface, per_ns);
}

/// `Command::output` feeding `input` on stdin.
trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output;
}

impl OutputWithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output {
        use std::io::Write as _;
        let piped = std::process::Stdio::piped;
        let mut child = self.stdin(piped()).stdout(piped()).stderr(piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}

/// curl's HTTP status for `url` with `args` ("000" when no HTTP answer came at all).
fn curl_status(args: &[&str], url: &str) -> String {
    let curl = require_program("curl", "curl");
    let out = std::process::Command::new(curl)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth_keep_scrapers_out() {
    require_root();
    let dir = TempDir::new("nsm-web");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_file = dir.write("server.crt", &cert.cert.pem());
    dir.write("server.key", &cert.signing_key.serialize_pem());
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.write(
        "web.yml",
        &format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  scraper: {hash}\n"),
    );
    let listen = listen_addr();
    let _agent = AgentProcess::start(&["--listen", &listen.to_string(), "--web-config", web.to_str().unwrap()]).await;
    let https = format!("https://{listen}/metrics");
    let ca = cert_file.to_str().unwrap();
    assert_eq!(curl_status(&["--cacert", ca], &https), "401", "no credentials");
    assert_eq!(curl_status(&["--cacert", ca, "-u", "scraper:wrong"], &https), "401", "wrong password");
    assert_eq!(curl_status(&["--cacert", ca, "-u", "scraper:s3cret"], &https), "200", "right credentials");
    assert_eq!(curl_status(&["--cacert", ca, "-u", "scraper:s3cret", "--tls-max", "1.1"], &https), "000", "TLS < 1.2");
    assert_eq!(curl_status(&["-u", "scraper:s3cret"], &format!("http://{listen}/metrics")), "000", "plain HTTP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_web_config_stops_the_agent_before_it_loads_anything() {
    require_root();
    let dir = TempDir::new("nsm-web-bad");
    let cases = [
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", "missing.crt"),
        ("basic_auth_users:\n  someone: plaintext\n", "bcrypt"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n", "TLS11"),
        ("listen_address: 1\n", "listen_address"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let web = dir.write(&format!("web{i}.yml"), text);
        let pins = PinDir::new("nsm-badweb");
        let out = tokio::time::timeout(
            DEADLINE,
            cli_command()
                .args(["run", "--listen", &listen_addr().to_string(), "--web-config", web.to_str().unwrap()])
                .arg("--pin-dir")
                .arg(&pins.path)
                .output(),
        )
        .await
        .expect("the agent exits")
        .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(needle) && stderr.contains(&format!("web{i}.yml")), "{text}: {stderr}");
        assert!(!pins.path.exists(), "nothing may be pinned (loaded) before the configuration is known good");
    }
}
