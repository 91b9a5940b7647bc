//! Bad input everywhere, table-driven: invalid arguments to every CLI verb (names, PIDs, CIDRs, ports, files),
//! malformed agent configurations and web configurations, and hostile HTTP requests to a real agent's endpoint.
//! Every case must end with the documented exit code (2 bad usage, 1 failed operation) and a message naming
//! the problem, never a panic, and leave nothing half-made: no namespace under /run/netns, no interface, no
//! nftables rule, no pin directory, no file carrying a name the case used.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use netns_monitor_tests::{
    NamedNetns,
    agent::PinDir,
    monitoring::{TempDir, free_port},
    netns::{self, nft_rules_of},
    reliability::Agent,
    require_root, unique_name,
};

/// Something a failed command must not have left behind.
#[derive(Debug)]
enum Trace {
    Netns(String),
    HostLink(String),
    LinkIn { netns: String, link: String },
    NftTag(String),
    Path(PathBuf),
}

impl Trace {
    /// Whether it exists now.
    fn exists(&self) -> bool {
        match self {
            Trace::Netns(name) => Path::new("/run/netns").join(name).exists(),
            Trace::HostLink(link) => netns::sh("ip", &["link", "show", "dev", link]).status.success(),
            Trace::LinkIn { netns: ns, link } => {
                netns::sh("ip", &["-n", ns, "link", "show", "dev", link]).status.success()
            }
            Trace::NftTag(name) => !nft_rules_of(name).is_empty(),
            Trace::Path(path) => path.exists(),
        }
    }
}

struct Case {
    args: Vec<String>,
    code: i32,
    /// Substrings the error output must contain (the object and the reason).
    says: Vec<String>,
    leaves_no: Vec<Trace>,
    /// A pin directory removed when the case is dropped, should an agent have started after all.
    _pins: Option<PinDir>,
}

fn case(args: &[&str], code: i32, says: &[&str], leaves_no: Vec<Trace>) -> Case {
    Case {
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        code,
        says: says.iter().map(|s| (*s).to_owned()).collect(),
        leaves_no,
        _pins: None,
    }
}

/// Runs the CLI with `args`; kills it (and says so) if it runs longer than `timeout`: a case that should fail
/// at once but starts an agent instead must not hang the test.
fn run_bounded(args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    use std::process::Stdio;
    let mut child = netns::cli()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run netns-monitor {args:?}: {e}"));
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (stdout, mut stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    if status.is_none() {
        stderr.push_str(&format!("\n[killed: still running after {timeout:?}]"));
    }
    (status.and_then(|s| s.code()), stdout, stderr)
}

/// Runs every case and reports all failures at once.
fn run_cases(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = run_bounded(&args, Duration::from_secs(30));
        let mut wrong = Vec::new();
        if code != Some(case.code) {
            wrong.push(format!("exit {code:?}, expected {}", case.code));
        }
        for needle in &case.says {
            if !stderr.contains(needle.as_str()) {
                wrong.push(format!("stderr does not say {needle:?}"));
            }
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            wrong.push("it panicked".to_owned());
        }
        if !stdout.is_empty() {
            wrong.push(format!("printed on stdout: {stdout:?}"));
        }
        for trace in &case.leaves_no {
            if trace.exists() {
                wrong.push(format!("left {trace:?} behind"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!("netns-monitor {args:?}: {}\n  stderr: {stderr}", wrong.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn every_verb_refuses_bad_arguments_cleanly() {
    require_root();
    let good_netns = NamedNetns::new("nsm-bad");
    let good = good_netns.name.clone();
    let missing = unique_name("nsm-missing");
    let (host, peer) = (unique_name("bh"), unique_name("bp"));
    let long_if = "y".repeat(16);
    let long_ns = "x".repeat(256);
    let own_pid = std::process::id().to_string();
    let no_pid = "999999999";
    let new_name = unique_name("nsm-new");
    let pair = || vec![Trace::HostLink(host.clone()), Trace::LinkIn { netns: good.clone(), link: peer.clone() }];
    let veth = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["veth", "add", &host, &peer, "--netns", &good];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect()
    };
    let veth_case = |extra: &[&str], code: i32, says: &[&str]| {
        let args = veth(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        case(&args, code, says, pair())
    };
    let stats_pins = PinDir::new("nsm-bad-stats");
    let stats_pin = stats_pins.path.display().to_string();

    let cases = vec![
        // add
        case(&["add", ""], 2, &["invalid namespace name", "empty"], vec![]),
        case(&["add", "a/b"], 2, &["\"a/b\"", "'/'"], vec![]),
        case(&["add", ".."], 2, &["\"..\""], vec![]),
        case(&["add", &long_ns], 2, &["longer than 255"], vec![Trace::Netns(long_ns.clone())]),
        case(&["add", &good], 2, &[&format!("{good:?}"), "already exists"], vec![]),
        case(&["add"], 2, &["required"], vec![]),
        case(&["add", "a", "b"], 2, &["unexpected argument"], vec![Trace::Netns("a".into()), Trace::Netns("b".into())]),
        // del
        case(&["del", &missing], 2, &[&format!("{missing:?}"), "does not exist"], vec![]),
        case(&["del"], 2, &["required"], vec![]),
        case(&["del", &good, "--all"], 2, &["cannot be used with"], vec![]),
        case(&["del", "../etc"], 2, &["invalid namespace name"], vec![]),
        // exec
        case(&["exec", &missing, "--", "true"], 2, &[&format!("{missing:?}"), "does not exist"], vec![]),
        case(&["exec", &good], 2, &["required"], vec![]),
        case(&["exec", &good, "--", "/nonexistent/cmd"], 1, &["/nonexistent/cmd", "No such file"], vec![]),
        // identify
        case(&["identify", "0"], 2, &["process 0 does not exist"], vec![]),
        case(&["identify", "4294967295"], 2, &["process 4294967295 does not exist"], vec![]),
        case(&["identify", "4294967296"], 2, &["invalid value"], vec![]),
        case(&["identify", "abc"], 2, &["invalid value 'abc'"], vec![]),
        case(&["identify", "--", "-5"], 2, &["invalid value '-5'"], vec![]),
        // pids
        case(&["pids", &missing], 2, &["does not exist"], vec![]),
        case(&["pids", ""], 2, &["invalid namespace name"], vec![]),
        // attach
        case(
            &["attach", &new_name, no_pid],
            2,
            &["process 999999999 does not exist"],
            vec![Trace::Netns(new_name.clone())],
        ),
        case(&["attach", &good, &own_pid], 2, &["already exists"], vec![]),
        case(&["attach", &new_name], 2, &["required"], vec![Trace::Netns(new_name.clone())]),
        case(&["attach", "a/b", &own_pid], 2, &["invalid namespace name"], vec![]),
        case(&["attach", &new_name, "-1"], 2, &["unexpected argument"], vec![Trace::Netns(new_name.clone())]),
        // veth
        case(
            &["veth", "add", &host, &peer, "--netns", &missing],
            2,
            &["does not exist"],
            vec![Trace::HostLink(host.clone())],
        ),
        case(&["veth", "add", &long_if, &peer, "--netns", &good], 2, &["longer than 15"], pair()),
        case(&["veth", "add", &host, "a b", "--netns", &good], 2, &["invalid interface name"], pair()),
        veth_case(&["--address", "10.0.0.1"], 2, &["expected ADDRESS/PREFIX"]),
        veth_case(&["--address", "10.0.0.300/24"], 2, &["not an IPv4 or IPv6 address"]),
        veth_case(&["--address", "10.0.0.1/33"], 2, &["above 32"]),
        veth_case(&["--peer-address", "fd00::1/129"], 2, &["above 128"]),
        veth_case(&["--address", "10.0.0.1/x"], 2, &["not a number"]),
        veth_case(&["--mtu", "1"], 2, &["MTU 1 is out of range"]),
        veth_case(&["--mtu", "100000"], 2, &["MTU 100000"]),
        veth_case(&["--mtu", "-3"], 2, &["unexpected argument"]),
        veth_case(&["--peer-gateway", "nope"], 2, &["invalid IP address"]),
        veth_case(&["--host-netns", &missing], 2, &["does not exist"]),
        case(
            &["veth", "add", "lo", &peer, "--netns", &good],
            2,
            &["\"lo\" already exists"],
            vec![Trace::LinkIn { netns: good.clone(), link: peer.clone() }],
        ),
        case(
            &["veth", "add", &host, "lo", "--netns", &good],
            2,
            &["\"lo\" already exists"],
            vec![Trace::HostLink(host.clone())],
        ),
        case(&["veth", "del", &host], 2, &["does not exist"], vec![]),
        case(&["veth", "del", "lo"], 2, &["not a veth"], vec![]),
        // nat
        case(&["nat", "add", &missing, "--out", "lo"], 2, &["does not exist"], vec![Trace::NftTag(missing.clone())]),
        // A regression: with --subnet the namespace used to go unchecked and rules for it were made.
        case(
            &["nat", "add", &missing, "--out", "lo", "--subnet", "10.9.0.0/24"],
            2,
            &["does not exist"],
            vec![Trace::NftTag(missing.clone())],
        ),
        case(&["nat", "add", &good, "--out", "lo"], 2, &["no global IPv4 address"], vec![Trace::NftTag(good.clone())]),
        case(
            &["nat", "add", &good, "--out", &long_if, "--subnet", "10.9.0.0/24"],
            2,
            &["longer than 15"],
            vec![Trace::NftTag(good.clone())],
        ),
        case(
            &["nat", "add", &good, "--out", "lo", "--subnet", "10.0.0.0/40"],
            2,
            &["above 32"],
            vec![Trace::NftTag(good.clone())],
        ),
        case(&["nat", "add", &good], 2, &["--out"], vec![]),
        case(&["nat", "del", &missing], 2, &["no nat rules"], vec![]),
        // forward
        case(
            &["forward", "add", &good, "--port", "8080"],
            2,
            &["HOST_PORT:NS_PORT"],
            vec![Trace::NftTag(good.clone())],
        ),
        case(&["forward", "add", &good, "--port", "0:80"], 2, &["from 1 to 65535"], vec![]),
        case(&["forward", "add", &good, "--port", "1:70000"], 2, &["from 1 to 65535"], vec![]),
        case(&["forward", "add", &good, "--port", "1:2/sctp"], 2, &["tcp or udp"], vec![]),
        case(&["forward", "add", &good, "--port", ":"], 2, &["invalid port"], vec![]),
        case(
            &["forward", "add", &good, "--port", "8080:80", "--to", "300.1.1.1"],
            2,
            &["invalid IPv4 address"],
            vec![],
        ),
        // A regression: with --to the namespace used to go unchecked and a forward to nowhere was made.
        case(
            &["forward", "add", &missing, "--port", "8080:80", "--to", "10.0.0.1"],
            2,
            &["does not exist"],
            vec![Trace::NftTag(missing.clone())],
        ),
        case(
            &["forward", "add", &good, "--port", "8080:80"],
            2,
            &["no global IPv4 address"],
            vec![Trace::NftTag(good.clone())],
        ),
        case(&["forward", "del", &good, "--port", "abc"], 2, &["invalid port"], vec![]),
        case(&["forward", "del", &good], 2, &["no port forward"], vec![]),
        // trace
        case(&["trace", "--syscall", "nope"], 2, &["unknown syscall \"nope\""], vec![]),
        case(&["trace", "--type", "nope"], 2, &["unknown namespace type \"nope\""], vec![]),
        case(&["trace", "--netns", &missing], 2, &[&format!("no network namespace named {missing:?}")], vec![]),
        case(&["trace", "--duration", "nan"], 2, &["--duration must be a positive number"], vec![]),
        case(&["trace", "--duration", "0"], 2, &["--duration must be a positive number"], vec![]),
        case(&["trace", "--duration", "-1"], 2, &["unexpected argument"], vec![]),
        case(&["trace", "--ring-buffer-bytes", "5000"], 2, &["power of two"], vec![]),
        case(&["trace", "--pid", "abc"], 2, &["invalid value 'abc'"], vec![]),
        case(&["trace", "--count", "x"], 2, &["invalid value 'x'"], vec![]),
        // stats
        case(&["stats", &missing, "--pin-dir", &stats_pin], 2, &["no network namespace named"], vec![]),
        case(
            &["stats", "--pin-dir", &stats_pin],
            1,
            &["no traffic counters yet", &stats_pin],
            vec![Trace::Path(stats_pins.path.clone())],
        ),
        case(
            &["stats", "--pin-dir", "/etc"],
            1,
            &["no traffic counters yet"],
            vec![Trace::Path("/etc/TRAFFIC".into())],
        ),
        // everything else
        case(&["frobnicate"], 2, &["unrecognized subcommand"], vec![]),
        case(&["list", "--bogus"], 2, &["unexpected argument"], vec![]),
    ];
    run_cases(&cases);
    // Nothing of the good namespace's was touched either.
    assert!(Path::new("/run/netns").join(&good).exists());
}

/// `run` with a pin directory and a port of its own, so any leftover would be visible.
fn run_case(args: &[&str], code: i32, says: &[&str]) -> Case {
    run_case_with(args, code, says, true)
}

/// [`run_case`], without `--pin-dir` when `own_pin_dir` is false (the case's configuration file names it; the
/// flag would win over the file).
fn run_case_with(args: &[&str], code: i32, says: &[&str], own_pin_dir: bool) -> Case {
    let pins = PinDir::new("nsm-bad-run");
    let mut all = vec!["run".to_owned()];
    if own_pin_dir {
        all.extend(["--pin-dir".to_owned(), pins.path.display().to_string()]);
    }
    if !args.contains(&"--listen") {
        all.extend(["--listen".to_owned(), format!("127.0.0.1:{}", free_port())]);
    }
    all.extend(args.iter().map(|s| (*s).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut case = case(&all, code, says, vec![Trace::Path(pins.path.clone())]);
    case._pins = Some(pins);
    case
}

#[test]
fn the_agent_refuses_bad_configurations_before_it_loads_anything() {
    require_root();
    let dir = TempDir::new("nsm-bad-config");
    let file = |name: &str, text: &str| dir.write(name, text).display().to_string();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    dir.write("server.crt", &cert.cert.pem());
    dir.write("server.key", &cert.signing_key.serialize_pem());
    dir.write("other.key", &other.signing_key.serialize_pem());
    std::fs::write(dir.path.join("garbage.yml"), [0xff, 0xfe, 0x00, 0x9f, 0x92, 0x96]).unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    let in_use = TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use_addr = in_use.local_addr().unwrap().to_string();
    let not_bpffs = std::env::temp_dir().join(unique_name("nsm-not-bpffs")).join("pins");

    let config = |name: &str, text: &str| file(name, text);
    let web = |name: &str, text: &str| file(name, text);
    let cases = vec![
        // Flags.
        run_case(&["--ring-buffer-bytes", "5000"], 2, &["power of two", "5000"]),
        run_case(&["--ring-buffer-bytes", "1024"], 2, &["power of two"]),
        run_case(&["--listen", "nowhere"], 2, &["invalid value 'nowhere'"]),
        run_case(&["--listen", "127.0.0.1:99999"], 2, &["invalid value"]),
        run_case(&["--listen", &in_use_addr], 1, &["cannot serve metrics on", &in_use_addr, "in use"]),
        run_case(&["--filter-pid", "x"], 2, &["invalid value 'x'"]),
        // Agent configuration files.
        run_case(&["--config", "/nonexistent/agent.yml"], 2, &["/nonexistent/agent.yml", "No such file"]),
        run_case(&["--config", "/"], 2, &["cannot read the configuration file /", "Is a directory"]),
        run_case(&["--config", "/dev/zero"], 2, &["/dev/zero", "larger than"]),
        run_case(&["--config", &dir.path.join("garbage.yml").display().to_string()], 2, &["garbage.yml", "UTF-8"]),
        run_case(&["--config", &config("c1.yml", "listn: 1\n")], 2, &["c1.yml", "unknown field `listn`"]),
        run_case(&["--config", &config("c2.yml", "listen: [1, 2\n")], 2, &["c2.yml"]),
        run_case(&["--config", &config("c3.yml", "listen: 300.1.1.1:80\n")], 2, &["c3.yml", "listen"]),
        run_case(&["--config", &config("c4.yml", "ring_buffer_bytes: -1\n")], 2, &["c4.yml", "ring_buffer_bytes"]),
        run_case(&["--config", &config("c5.yml", "ring_buffer_bytes: 5000\n")], 2, &["c5.yml", "power of two"]),
        run_case(&["--config", &config("c6.yml", "web_config: {a: 1}\n")], 2, &["c6.yml", "web_config"]),
        run_case(&["--config", &config("c7.yml", "- a\n- b\n")], 2, &["c7.yml"]),
        run_case(&["--config", &config("c8.yml", "web_config: missing.yml\n")], 2, &["missing.yml", "No such file"]),
        run_case_with(
            &["--config", &config("c9.yml", &format!("pin_dir: {}\n", not_bpffs.display()))],
            1,
            &["not on a BPF file system"],
            false,
        ),
        // Web configurations.
        run_case(&["--web-config", &web("w1.yml", "tls_server_config: [\n")], 2, &["w1.yml", "tls_server_config"]),
        run_case(
            &["--web-config", &web("w2.yml", "basic_auth_users:\n  u: \"$2y$10$short\"\n")],
            2,
            &["w2.yml", "bcrypt"],
        ),
        run_case(&["--web-config", &web("w3.yml", "basic_auth_users:\n  u: plaintext\n")], 2, &["w3.yml", "bcrypt"]),
        run_case(
            &[
                "--web-config",
                &web(
                    "w4.yml",
                    "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS10\n",
                ),
            ],
            2,
            &["w4.yml", "TLS10"],
        ),
        run_case(
            &["--web-config", &web("w5.yml", "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n")],
            2,
            &["w5.yml", "nope.crt"],
        ),
        run_case(
            &["--web-config", &web("w6.yml", "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n")],
            2,
            &["w6.yml"],
        ),
        run_case(
            &["--web-config", &web("w7.yml", "tls_server_config:\n  cert_file: /dev/zero\n  key_file: server.key\n")],
            2,
            &["w7.yml", "/dev/zero", "larger than"],
        ),
        run_case(
            &[
                "--web-config",
                &web(
                    "w8.yml",
                    "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                ),
            ],
            2,
            &["w8.yml", "cipher_suites"],
        ),
        run_case(
            &[
                "--web-config",
                &web(
                    "w9.yml",
                    "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n",
                ),
            ],
            2,
            &["w9.yml", "client_ca"],
        ),
        run_case(
            &["--web-config", &web("w10.yml", "http_server_config:\n  headers:\n    X-Evil: \"a\\nb\"\n")],
            2,
            &["w10.yml"],
        ),
        run_case(
            &["--web-config", &web("w11.yml", &format!("basic_auth_users:\n  \"a:b\": {hash}\n"))],
            2,
            &["w11.yml"],
        ),
        run_case(&["--web-config", "/dev/zero"], 2, &["/dev/zero", "larger than"]),
        run_case(&["--web-config", "/nonexistent/web.yml"], 2, &["/nonexistent/web.yml"]),
    ];
    run_cases(&cases);
    assert!(!not_bpffs.parent().unwrap().exists(), "no directory was made outside bpffs");
    drop(in_use);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_pin_dir_is_refused() {
    require_root();
    let mut agent = Agent::start(&[]).await;
    let pins_before = agent.pins();
    let pin = agent.pin_dir.display().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let stderr = netns::fails(&["run", "--pin-dir", &pin, "--listen", &listen], 1);
    assert!(
        stderr.contains("another netns-monitor agent is using the pin directory") && stderr.contains(&pin),
        "{stderr}"
    );
    assert!(agent.running(), "the first agent carries on");
    assert_eq!(agent.pins(), pins_before, "the second agent touched nothing");
    agent.scrape();
}

/// Sends `request` and returns the status code of the answer, or `None` if the server closed the connection
/// without one. Never waits longer than `timeout`.
fn raw_request(addr: SocketAddr, request: &[u8], timeout: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).expect("connect");
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    // The server may answer and close before reading everything (431): a failed write is fine.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// A status code, or `None` when the server closed the connection without answering.
type Answer = Option<u16>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_requests_get_4xx_and_the_agent_serves_on() {
    require_root();
    let mut agent = Agent::start(&[]).await;
    let addr = agent.listen;
    let timeout = Duration::from_secs(20);
    let get = |path: &str, headers: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n").into_bytes()
    };
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut junk = vec![0u8; 4096];
    for (i, byte) in junk.iter_mut().enumerate() {
        *byte = (i * 7 + 3) as u8;
    }
    // `None`: the server closed the connection without an answer.
    let cases: Vec<(&str, Vec<u8>, &[Answer])> = vec![
        ("unknown path", get("/nope", ""), &[Some(404)]),
        ("path traversal", get("/../../etc/passwd", ""), &[Some(400), Some(404)]),
        ("huge header", get("/metrics", &format!("X-Big: {}\r\n", "a".repeat(64 * 1024))), &[Some(431)]),
        ("too many headers", get("/metrics", &many_headers), &[Some(431)]),
        ("huge path", get(&format!("/{}", "p".repeat(1 << 20)), ""), &[Some(400), Some(414), Some(431)]),
        (
            "POST with a body",
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            &[Some(405)],
        ),
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), &[Some(400)]),
        ("binary junk", junk, &[Some(400)]),
        // hyper (HTTP/1.1 only) closes a connection that opens with the HTTP/2 preface.
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), &[Some(400), Some(505), None]),
        (
            "bad Content-Length",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
            &[Some(400)],
        ),
        ("basic auth without auth configured", get("/metrics", "Authorization: Basic Zm9vOmJhcg==\r\n"), &[Some(200)]),
    ];
    let mut failures = Vec::new();
    for (what, request, expected) in &cases {
        let started = Instant::now();
        let status = raw_request(addr, request, timeout);
        eprintln!("{what}: {status:?} in {:?}", started.elapsed());
        if !expected.contains(&status) {
            failures.push(format!("{what}: answered {status:?}, expected one of {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Slow clients (headers never finished) do not keep others out: with 16 of them connected, the index page
    // (no collection behind it) is served at once, and they are all still connected then.
    let mut slow = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    assert_eq!(raw_request(addr, &get("/", ""), timeout), Some(200));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a request waited behind slow clients: {:?}",
        started.elapsed()
    );
    for stream in &slow {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let still_open = matches!((&*stream).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open, "a slow client was already disconnected: the request was not served alongside them");
    }
    drop(slow);
    assert!(agent.scrape().get("netns_monitor_attached_interfaces", &[]).is_some(), "a whole scrape");

    assert!(agent.running(), "the agent survived");
    let log = agent.log();
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:#?}");
    assert_eq!(raw_request(addr, &get("/metrics", ""), timeout), Some(200));
}

/// `run --name-containers` with `/run/netns-monitor` read-only (systemd's `ProtectSystem=strict` without the
/// drop-in the README gives) refuses to start, naming the directory, before anything is loaded.
#[test]
fn name_containers_refuses_to_start_where_it_cannot_keep_names() {
    require_root();
    let pins = PinDir::new("nsm-bad-names");
    std::fs::create_dir_all("/run/netns-monitor/names").expect("make the registry directory");
    // A mount namespace of the agent's own, so the read-only bind mount goes with it.
    let script = r#"mount --bind -o ro /run/netns-monitor/names /run/netns-monitor/names && exec "$0" "$@""#;
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .arg(netns::cli_path())
        .args(["run", "--name-containers", "--pin-dir"])
        .arg(&pins.path)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .expect("run the agent under unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "refused: {stderr}");
    for says in ["--name-containers", "/run/netns-monitor/names", "Read-only file system"] {
        assert!(stderr.contains(says), "the error says {says:?}: {stderr}");
    }
    assert!(!pins.path.exists(), "nothing was loaded or pinned before the refusal");
}

/// Without root (here: uid `nobody` with no capabilities, through `setpriv`), every verb that needs privileges
/// says so and which capabilities it lacks, exits 1, and does nothing: before, `list` printed one namespace with
/// wrong process counts and exit 0, `add` a bare EPERM, and `stats` told the user to start the agent.
#[test]
fn without_root_each_verb_says_what_it_needs_and_does_nothing() {
    require_root();
    let name = unique_name("nsm-noroot");
    let _guard = netns::NetnsGuard::new(&name);
    let cli = netns::cli_path();
    let verbs: [&[&str]; 10] = [
        &["list"],
        &["pids", "x"],
        &["add", &name],
        &["stats"],
        &["trace", "--count", "1"],
        &["unload"],
        &["monitor", "--count", "1"],
        &["set", &name, "auto"],
        &["list-id"],
        &["top"],
    ];
    for args in verbs {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
            .arg(&cli)
            .args(args)
            .current_dir("/")
            .output()
            .expect("run setpriv");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("`{}` needs root (or CAP_", args[0])), "{args:?}: {stderr}");
        assert!(stderr.contains("this process lacks CAP_"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed nothing: {}", String::from_utf8_lossy(&out.stdout));
    }
    assert!(!Path::new("/run/netns").join(&name).exists(), "add made nothing");
}
