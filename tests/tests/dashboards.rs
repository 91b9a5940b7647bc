//! The Grafana dashboards (grafana/dashboards/*.json) and their provisioning.
//!
//! Offline: the JSON has the structure Grafana needs (unique panel ids, the datasource variable everywhere,
//! grid positions inside 24 columns and not overlapping), every expression uses only metrics and labels of
//! docs/metrics.md, and the provisioning files point at the dashboards.
//!
//! Live: the real agent (`netns-monitor run`) watches two test namespaces joined by a veth that carry real
//! TCP and UDP traffic, a real Prometheus scrapes it every second, and every PromQL expression of every
//! dashboard (panel targets and variable queries, with Grafana's variables replaced by real values: the test
//! namespace's inode, the agent's instance, rate windows for a 1 s scrape) must evaluate without error and
//! return at least one series. The alert rules are loaded into the same Prometheus and must evaluate cleanly.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use netns_monitor_tests::{
    agent::PinDir,
    monitoring::{
        Daemon, TempDir,
        contract::Contract,
        free_port,
        grafana::{self, Dashboard, Query, VariableQuery, interpolate, regex_escape},
        http,
        prometheus::{self, Prometheus},
        promql,
        python::yaml_document,
        repo_file, require_program,
    },
    netns::{self, NetnsGuard, cli_path, ok},
    require_root, sentinel, unique_name,
};
use serde_json::Value;

/// Grafana's `$__rate_interval` for the test Prometheus' 1 s scrape interval (prometheus::config):
/// max(4 × scrape, `$__interval` + scrape).
const RATE_INTERVAL: &str = "4s";
/// Scrapes Prometheus must hold before the rate windows are full.
const MIN_SCRAPES: f64 = 6.0;
/// The job name alerts.yml selects on.
const JOB: &str = "netns-monitor";

#[test]
fn dashboards_are_well_formed_and_use_the_metrics_contract() {
    let contract = Contract::load();
    let dashboards = grafana::dashboards();
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    for dashboard in &dashboards {
        problems.extend(dashboard.structure_problems());
        if !uids.insert(dashboard.json["uid"].as_str().unwrap_or_default().to_owned()) {
            problems.push(format!("{}: uid {} is used twice", dashboard.file, dashboard.json["uid"]));
        }
        // Every variable an expression uses exists (the values here are placeholders; only names matter).
        let mut names: BTreeMap<String, String> = builtin_values().into_iter().collect();
        for variable in dashboard.variables() {
            names.insert(variable["name"].as_str().unwrap_or_default().to_owned(), "0".into());
        }
        for query in dashboard.target_queries().into_iter().chain(dashboard.variable_queries()) {
            if let Err(e) = interpolate(&query.expr, &names) {
                problems.push(format!("{}: {e}", query.location));
            }
            for problem in contract.check(&query.expr, query.legend.as_deref()) {
                problems.push(format!("{}: {problem}", query.location));
            }
        }
    }
    assert!(problems.is_empty(), "dashboard problems:\n{}", problems.join("\n"));

    // The issue's panels are there.
    let overview = dashboards.iter().find(|d| d.json["uid"] == "netns-monitor-overview").expect("overview dashboard");
    let per_netns =
        dashboards.iter().find(|d| d.json["uid"] == "netns-monitor-netns").expect("per-namespace dashboard");
    let uses = |d: &Dashboard, metric: &str| d.target_queries().iter().any(|q| q.expr.contains(metric));
    // The protocol panels show data only with the agent's opt-in split: each says so.
    for dashboard in [overview, per_netns] {
        for panel in dashboard.json["panels"].as_array().expect("panels") {
            let exprs = panel["targets"].as_array().map(|t| t.iter().map(|t| t["expr"].to_string()).collect());
            let exprs: Vec<String> = exprs.unwrap_or_default();
            if exprs.iter().any(|e| e.contains("_protocol_")) {
                let description = panel["description"].as_str().unwrap_or_default();
                assert!(description.contains("--traffic-protocols"), "{}: {description}", dashboard.file);
            }
        }
    }
    for metric in [
        "netns_monitor_netns_info",
        "netns_monitor_netns_receive_bytes_total",
        "netns_monitor_netns_transmit_packets_total",
        "netns_monitor_network_receive_protocol_bytes_total",
        "netns_monitor_transitions_total",
        "netns_monitor_netns_created_total",
        "netns_monitor_netns_destroyed_total",
        "netns_monitor_events_lost_total",
        "netns_monitor_ringbuf_fill_ratio",
        "netns_monitor_bpf_program_run_time_seconds_total",
        "netns_monitor_bpf_program_runs_total",
        "netns_monitor_attach_failures_total",
        "netns_monitor_build_info",
    ] {
        assert!(uses(overview, metric), "the overview dashboard shows nothing from {metric}");
    }
    for metric in [
        "netns_monitor_network_receive_bytes_total",
        "netns_monitor_network_transmit_packets_total",
        "netns_monitor_network_receive_protocol_packets_total",
        "netns_monitor_netns_processes",
        "netns_monitor_netns_interfaces",
    ] {
        assert!(uses(per_netns, metric), "the per-namespace dashboard shows nothing from {metric}");
    }
    let netns_var = per_netns.variables().into_iter().find(|v| v["name"] == "netns").expect("netns variable");
    let query = Dashboard::variable_query(netns_var).expect("netns variable query");
    assert!(query.contains("netns_monitor_netns_info"), "netns variable: {query}");
    // The variable's value is the inode (the identity), its text the inode and the name.
    assert!(netns_var["regex"].as_str().unwrap_or_default().contains(r#"netns="(?<value>"#), "netns variable regex");
    for query in per_netns.target_queries() {
        assert!(query.expr.contains(r#"netns="$netns""#), "{}: not filtered by $netns: {}", query.location, query.expr);
    }
}

#[test]
fn provisioning_loads_the_dashboards_from_prometheus() {
    let datasources = yaml_document(&repo_file("grafana/provisioning/datasources/netns-monitor.yml"));
    assert_eq!(datasources["apiVersion"], 1);
    let source = &datasources["datasources"][0];
    assert_eq!(source["type"], "prometheus");
    assert!(source["uid"].as_str().is_some_and(|u| !u.is_empty()), "a fixed uid");
    assert!(source["url"].as_str().is_some_and(|u| !u.is_empty()), "a url");
    assert_eq!(source["isDefault"], true, "the dashboards' datasource variable defaults to the default source");

    let providers = yaml_document(&repo_file("grafana/provisioning/dashboards/netns-monitor.yml"));
    assert_eq!(providers["apiVersion"], 1);
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"], "file");
    let path = provider["options"]["path"].as_str().expect("provider path");
    // README's docker command mounts grafana/dashboards exactly there.
    let readme = std::fs::read_to_string(repo_file("README.md")).expect("README");
    assert!(
        readme.contains(&format!("grafana/dashboards:{path}")),
        "README.md does not show grafana/dashboards mounted at the provider path {path}"
    );
}

/// Grafana's built-in interval variables for a 1 s scrape interval, and a range the data covers.
fn builtin_values() -> Vec<(String, String)> {
    [
        ("__rate_interval", RATE_INTERVAL),
        ("__interval", "1s"),
        ("__interval_ms", "1000"),
        ("__range", "1m"),
        ("__range_s", "60"),
        ("__range_ms", "60000"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into()
}

/// Continuous TCP and UDP traffic from namespace `a` to namespace `b` until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    fn start(a: &str, b: &str, b_ip: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tcp_to = netns::addr(b_ip, netns::port(61));
        let udp_to = netns::addr(b_ip, netns::port(62));
        let listener = netns::listen(Some(b), tcp_to);
        let udp_in = netns::in_named(b, move || UdpSocket::bind(udp_to).expect("bind UDP receiver"));
        let udp_out = netns::in_named(a, || UdpSocket::bind("0.0.0.0:0").expect("bind UDP sender"));
        let mut threads = vec![spawn_tcp_sink(listener, stop.clone())];
        let tcp_out = netns::connect(Some(a), tcp_to, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("TCP from {a} to {b} at {tcp_to}: {e}"));
        threads.push(spawn_tcp_source(tcp_out, stop.clone()));
        threads.push(spawn_udp(udp_out, udp_in, udp_to, stop.clone()));
        Self { stop, threads }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Accepts one connection and reads it until the source stops.
fn spawn_tcp_sink(listener: TcpListener, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    use std::io::Read as _;
    listener.set_nonblocking(true).expect("nonblocking listener");
    std::thread::spawn(move || {
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        stream.set_nonblocking(false).expect("blocking stream");
        stream.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
        let mut buf = [0u8; 16 * 1024];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(0) = stream.read(&mut buf) {
                return;
            }
        }
    })
}

/// Writes 8 KiB every 5 ms (about 1.6 MB/s: visible in every rate, light on a shared 2-core machine).
fn spawn_tcp_source(mut stream: TcpStream, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    use std::io::Write as _;
    std::thread::spawn(move || {
        let chunk = [0x5au8; 8 * 1024];
        while !stop.load(Ordering::Relaxed) {
            if stream.write_all(&chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Sends a 512-byte datagram every 5 ms and drains the receiver.
fn spawn_udp(out: UdpSocket, receiver: UdpSocket, to: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    receiver.set_nonblocking(true).expect("nonblocking UDP receiver");
    std::thread::spawn(move || {
        let datagram = [0xa5u8; 512];
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let _ = out.send_to(&datagram, to);
            while receiver.recv(&mut buf).is_ok() {}
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Polls `condition` every 100 ms until it returns `Some`, checking that both processes still run; panics
/// with `what` and `diagnose()` after `deadline`.
fn wait_for<T>(
    deadline: Duration,
    what: &str,
    agent: &mut Daemon,
    prometheus: &mut Prometheus,
    mut condition: impl FnMut(&Prometheus) -> Option<T>,
    diagnose: impl Fn(&Prometheus) -> String,
) -> T {
    let start = Instant::now();
    loop {
        agent.assert_running(
            "before the test was done: `netns-monitor run --listen ADDR` must start and keep serving docs/metrics.md",
        );
        prometheus.assert_running();
        if let Some(value) = condition(prometheus) {
            return value;
        }
        if start.elapsed() > deadline {
            panic!(
                "timed out after {deadline:?} waiting for {what}\n{}\n{}'s output ends with:\n{}",
                diagnose(prometheus),
                agent.name,
                agent.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The scrape target's state and last error, for failure messages.
fn target_health(prometheus: &Prometheus) -> String {
    let targets = prometheus.targets();
    let active = targets["activeTargets"].as_array().cloned().unwrap_or_default();
    active
        .iter()
        .map(|t| format!("target {} health {} lastError {}", t["scrapeUrl"], t["health"], t["lastError"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The metric names the agent's scrapes contain (without the series Prometheus adds to every scrape).
fn exported_metrics(prometheus: &Prometheus) -> BTreeSet<String> {
    prometheus
        .query(&format!("group by (__name__) ({{job=\"{JOB}\"}})"))
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_owned))
        .filter(|name| name != "up" && !name.starts_with("scrape_"))
        .collect()
}

/// Values of a query variable: the label named like the variable on each series its query (`expr`, the
/// interpolated PromQL form) returns.
fn variable_values(prometheus: &Prometheus, variable: &Value, expr: &str) -> Result<Vec<String>, String> {
    let name = variable["name"].as_str().unwrap_or_default();
    let query = VariableQuery::parse(Dashboard::variable_query(variable).unwrap_or_default())?;
    let label = match &query {
        VariableQuery::LabelValues { label, .. } => label.clone(),
        // query_result: the regex must capture the value from the label of the same name.
        VariableQuery::QueryResult(_) => {
            let regex = variable["regex"].as_str().unwrap_or_default();
            if !regex.contains(&format!("{name}=\"(?<value>")) {
                return Err(format!("variable {name}: its regex {regex:?} does not take the value from label {name}"));
            }
            name.to_owned()
        }
    };
    let series = prometheus.query(expr).map_err(|e| e.to_string())?;
    let found: BTreeSet<String> =
        series.iter().filter_map(|s| s["metric"][&label].as_str().map(str::to_owned)).collect();
    Ok(found.into_iter().collect())
}

/// The outcome of one expression.
struct Outcome {
    query: Query,
    expr: String,
    error: Option<String>,
}

#[test]
fn every_dashboard_query_returns_data_from_a_live_agent() {
    require_root();
    let dashboards = grafana::dashboards();
    let dir = TempDir::new("nsm-dash");

    // The agent first, so it sees the namespaces being created and the veth ends appearing.
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
    // Its own pin directory, removed at the end, so the test leaves no classifier behind.
    let pins = PinDir::new("nsm-dash");
    let mut cmd = std::process::Command::new(cli_path());
    // With the protocol split, which the protocol panels need (they say so).
    cmd.args(["run", "--traffic-protocols", "--listen", &listen.to_string()])
        .arg("--pin-dir")
        .arg(&pins.path)
        .env("RUST_LOG", "info");
    let mut agent = Daemon::spawn("netns-monitor run", cmd, dir.path.join("agent.log"));
    // The endpoint answers only once the programs are attached and every namespace scanned: from then on the
    // agent sees everything below.
    let started = Instant::now();
    while !http::get(listen, "/metrics", Duration::from_secs(2)).is_ok_and(|r| r.status == 200) {
        agent.assert_running("starting");
        assert!(started.elapsed() < Duration::from_secs(60), "the agent did not serve /metrics within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Two namespaces joined by a veth, and a third created and destroyed.
    let (a, b) = (unique_name("nsm-da"), unique_name("nsm-db"));
    let _guards = (NetnsGuard::new(&a), NetnsGuard::new(&b));
    let net = netns::subnet(60);
    let b_ip = format!("{net}.2");
    ok(&["add", &a]);
    ok(&["add", &b]);
    let (va, vb) = (unique_name("da"), unique_name("db"));
    netns::veth_between(&a, &va, &b, &vb, &net);
    let c = unique_name("nsm-dc");
    let _guard_c = NetnsGuard::new(&c);
    ok(&["add", &c]);
    ok(&["del", &c]);
    let a_inode = netns_monitor_tests::inode(format!("/run/netns/{a}")).to_string();
    // A process living in namespace a, as a workload would (nsenter execs it: the pid is the sleep itself,
    // killed on drop).
    let mut sleeper = std::process::Command::new(require_program("nsenter", "util-linux"));
    sleeper.arg(format!("--net=/run/netns/{a}")).args(["--", "sleep", "600"]);
    let _workload = Daemon::spawn("sleep in the test namespace", sleeper, dir.path.join("sleep.log"));

    let _traffic = Traffic::start(&a, &b, &b_ip);
    // A failed setns (EBADF) for the transition-error panel; every namespace entry above was a setns too.
    sentinel();

    let alerts = repo_file("grafana/alerts.yml");
    let mut prometheus = Prometheus::start(&prometheus::config(JOB, listen, &[&alerts]));

    wait_for(
        Duration::from_secs(30),
        "Prometheus to scrape the agent successfully (up == 1)",
        &mut agent,
        &mut prometheus,
        |p| (p.value(&format!("up{{job=\"{JOB}\"}}")) == Some(1.0)).then_some(()),
        target_health,
    );
    wait_for(
        Duration::from_secs(30),
        &format!("{MIN_SCRAPES} successful scrapes (full rate windows)"),
        &mut agent,
        &mut prometheus,
        |p| p.value(&format!("sum_over_time(up{{job=\"{JOB}\"}}[1m])")).filter(|n| *n >= MIN_SCRAPES),
        target_health,
    );

    // Evaluate everything; expressions whose series appeared late get until the deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    let outcomes = loop {
        let outcomes: Vec<Outcome> =
            dashboards.iter().flat_map(|d| evaluate_dashboard(d, &prometheus, &listen, &a_inode)).collect();
        agent.assert_running("while its metrics were queried");
        if outcomes.iter().all(|o| o.error.is_none()) || Instant::now() > deadline {
            break outcomes;
        }
        std::thread::sleep(Duration::from_millis(500));
    };

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    if !failed.is_empty() {
        let exported = exported_metrics(&prometheus);
        let referenced: BTreeSet<String> = outcomes.iter().flat_map(|o| promql::analyze(&o.expr).metrics).collect();
        let missing: Vec<&String> = referenced.iter().filter(|m| !exported.contains(*m)).collect();
        let mut report = format!(
            "{} of {} dashboard expressions failed against the live agent (Prometheus {}, agent {listen}, test \
             namespace {a} = inode {a_inode}):\n",
            failed.len(),
            outcomes.len(),
            prometheus.addr
        );
        for outcome in &failed {
            report.push_str(&format!(
                "\n- {}: {}\n    {}\n",
                outcome.query.location,
                outcome.error.as_deref().unwrap_or_default(),
                outcome.expr.replace('\n', " ")
            ));
        }
        report.push_str(&format!(
            "\nMetrics the dashboards use that the agent does not export ({}):\n  {}\n\
             Metrics the agent exports ({}):\n  {}\n",
            missing.len(),
            missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join("\n  "),
            exported.len(),
            exported.iter().map(String::as_str).collect::<Vec<_>>().join(" ")
        ));
        panic!("{report}");
    }

    // The alert rules load and evaluate against the real metrics without errors.
    wait_for(
        Duration::from_secs(10),
        "every alert rule to evaluate cleanly",
        &mut agent,
        &mut prometheus,
        |p| {
            let groups = p.rules()["groups"].as_array().cloned().unwrap_or_default();
            let rules: Vec<Value> =
                groups.iter().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default()).collect();
            (!rules.is_empty() && rules.iter().all(|r| r["health"] == "ok")).then_some(())
        },
        |p| format!("rules: {:#}", p.rules()),
    );
    eprintln!("{} dashboard expressions returned data from the live agent", outcomes.len());
}

/// Resolves the dashboard's variables against Prometheus (picking the test namespace and the agent's
/// instance) and evaluates every variable query and panel expression.
fn evaluate_dashboard(
    dashboard: &Dashboard,
    prometheus: &Prometheus,
    agent: &SocketAddr,
    a_inode: &str,
) -> Vec<Outcome> {
    let mut values: BTreeMap<String, String> = builtin_values().into_iter().collect();
    let mut outcomes = Vec::new();
    let wanted: BTreeMap<&str, String> = [("netns", a_inode.to_owned()), ("instance", agent.to_string())].into();
    for variable in dashboard.variables() {
        let name = variable["name"].as_str().unwrap_or_default().to_owned();
        match variable["type"].as_str() {
            // Only used in datasource fields, never in expressions.
            Some("datasource") => continue,
            Some("query") => {}
            other => panic!("{}: variable {name} has type {other:?}, which this test does not model", dashboard.file),
        }
        let query = Query {
            location: format!("{} / variable {name}", dashboard.file),
            expr: Dashboard::variable_query(variable).unwrap_or_default().to_owned(),
            legend: None,
        };
        let expr = VariableQuery::parse(&query.expr).and_then(|q| interpolate(&q.promql(), &values));
        let (value, error) =
            match expr.as_deref().map_err(Clone::clone).and_then(|e| variable_values(prometheus, variable, e)) {
                Err(e) => (String::new(), Some(e)),
                Ok(found) if found.is_empty() => (String::new(), Some("no values".to_owned())),
                Ok(found) => match wanted.get(name.as_str()) {
                    Some(want) if !found.contains(want) => {
                        (want.clone(), Some(format!("does not offer {want} (the test's); offers {found:?}")))
                    }
                    Some(want) => (want.clone(), None),
                    None => (found[0].clone(), None),
                },
            };
        let multi = variable["multi"] == true || variable["includeAll"] == true;
        values.insert(name, if multi { regex_escape(&value) } else { value });
        outcomes.push(Outcome { expr: expr.unwrap_or_else(|_| query.expr.clone()), query, error });
    }
    for query in dashboard.target_queries() {
        let (expr, error) = match interpolate(&query.expr, &values) {
            Err(e) => (query.expr.clone(), Some(e)),
            Ok(expr) => match prometheus.query(&expr) {
                Err(e) => (expr, Some(e.to_string())),
                Ok(series) if series.is_empty() => (expr, Some("no series".to_owned())),
                Ok(_) => (expr, None),
            },
        };
        outcomes.push(Outcome { query, expr, error });
    }
    outcomes
}
