//! Real containers of six runtimes (Docker, Podman, LXC, bare runc, containerd's ctr, systemd-nspawn), each
//! seen through netns-monitor and checked against the runtime's own view (`docker ps`, `lxc-info`, `runc
//! state`, ...) and the kernel's (`/proc/PID/ns/net`, `ip link`/`ip addr` and the interface statistics inside
//! the container's namespace, `/proc/self/mountinfo`):
//!
//! - `list` names the runtime, the container's id and the runtime's name for it, the interfaces the kernel
//!   shows; `identify` prints the namespace's /run/netns names and then its other bind mounts;
//! - `attach --all` names each container's namespace with a symlink that follows it across a restart and goes
//!   with `--prune` after removal, never touching a name a person made; `ip netns exec` and `exec` enter it;
//! - `trace` shows the setns into the container (`docker exec`, `lxc-attach`, `nsenter`, ...);
//! - an agent running before the container starts counts both ends of its veth exactly as the kernel does,
//!   attaches without failing, and labels the namespace with the container in `/metrics` and `stats`;
//! - `run --name-containers` keeps a /run/netns name for each container started under it, across a restart,
//!   until the container is removed;
//! - restart and removal show in `list`.
//!
//! The fixtures are in tests/src/containers/: one dockerd, LXC bridge and Podman network per test process,
//! removed at exit; every container is removed by its guard. The tests run one at a time (`scope::serial`).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use netns_monitor_tests::{
    TraceProcess,
    agent::agent_stats,
    containers::{Container, Running, Runtime, net, scope},
    inode,
    netns::{AttachAllGuard, NetnsGuard, ip_netns_list, ok, sh_ok, wait_until},
    reliability::Agent,
    require_root, unique_name,
};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

/// `list --json` as rows.
fn list() -> Vec<Value> {
    let out = ok(&["list", "--json"]);
    serde_json::from_str::<Value>(&out).expect("list --json is JSON").as_array().expect("an array").clone()
}

/// The `list --json` row of namespace `inode`, if listed.
fn row(inode: u32) -> Option<Value> {
    list().into_iter().find(|row| row["inode"] == inode)
}

fn row_of(container: &Container) -> Value {
    let inode = container.inode();
    row(inode).unwrap_or_else(|| panic!("list --json has no row for {} ({inode}): {container:#?}", container.name))
}

/// The /run/netns names that lead to namespace `inode` (bind mounts and symlinks alike), as `ip netns
/// identify` finds them.
fn run_netns_names(inode: u32) -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::metadata(e.path()).is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == u64::from(inode))
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Mount points of namespace `inode` outside /run/netns (Docker's `EXEC_ROOT/netns/KEY`), from mountinfo.
fn other_bind_mounts(inode: u32) -> BTreeSet<String> {
    let root = format!("net:[{inode}]");
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter(|line| line.split(" - ").nth(1).is_some_and(|r| r.starts_with("nsfs ")))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(3) == Some(&root.as_str())).then(|| fields[4].to_owned())
        })
        .filter(|point| !point.starts_with("/run/netns/"))
        .collect()
}

/// What `source` should say, from the kernel's view: a /run/netns name, else a bind mount, else processes.
fn expected_source(inode: u32) -> &'static str {
    if !run_netns_names(inode).is_empty() {
        "named"
    } else if !other_bind_mounts(inode).is_empty() {
        "bind-mount"
    } else {
        "process"
    }
}

/// The runtime's own view of the container agrees with what the fixture recorded (a harness check).
fn check_oracle(runtime: &dyn Runtime, container: &Container) {
    let seen = runtime
        .inspect(container)
        .unwrap_or_else(|| panic!("{} says {} is not running", runtime.kind(), container.name));
    assert_eq!(
        (seen.id.as_str(), seen.name.as_str(), seen.pid),
        (container.id.as_str(), container.name.as_str(), container.pid)
    );
}

/// The container fields of a list row match the runtime's.
fn assert_container_fields(row: &Value, container: &Container) {
    let c = &row["container"];
    assert_eq!(c["runtime"], container.runtime, "container.runtime of {}: {row:#}", container.name);
    assert_eq!(c["id"], container.id.as_str(), "container.id of {}: {row:#}", container.name);
    assert_eq!(c["name"], container.name.as_str(), "container.name of {}: {row:#}", container.name);
}

fn list_and_identify(runtime: Arc<dyn Runtime>) {
    let (a, b) = (Running::start(Arc::clone(&runtime)), Running::start(Arc::clone(&runtime)));
    let table = ok(&["list"]);
    for running in [&a, &b] {
        let container = &running.container;
        check_oracle(runtime.as_ref(), container);
        let inode = container.inode();
        let row = row_of(container);
        assert_container_fields(&row, container);
        let mut kernel = net::links(container.pid);
        kernel.sort();
        let mut listed: Vec<String> = row["interfaces"]
            .as_array()
            .unwrap_or_else(|| panic!("interfaces listed: {row:#}"))
            .iter()
            .map(|i| i.as_str().expect("interface name").to_owned())
            .collect();
        listed.sort();
        assert_eq!(listed, kernel, "interfaces of {} as `ip -o link` shows them", container.name);
        assert_eq!(row["source"], expected_source(inode), "{row:#}");
        assert!(row["name"].as_str().is_some_and(|n| !n.is_empty()), "a top-level name: {row:#}");
        if container.runtime == "docker" {
            assert_eq!(row["name"], container.name.as_str(), "the name docker ps shows: {row:#}");
        }
        let line = table
            .lines()
            .find(|line| line.split_whitespace().next() == Some(inode.to_string().as_str()))
            .unwrap_or_else(|| panic!("no row for {inode} in the table:\n{table}"));
        assert!(
            line.contains(container.runtime) && line.contains(&container.name),
            "the table shows the container: {line}"
        );

        assert_identify(runtime.as_ref(), container);
    }
}

/// `identify PID` prints the namespace's /run/netns names, then the paths of its other bind mounts (each group
/// as the kernel's view has them), and among them where the runtime itself keeps it.
fn assert_identify(runtime: &dyn Runtime, container: &Container) {
    let inode = container.inode();
    let printed = ok(&["identify", &container.pid.to_string()]);
    let lines: Vec<String> = printed.lines().map(str::to_owned).collect();
    let (names, mounts) = (run_netns_names(inode), other_bind_mounts(inode));
    let split = names.len().min(lines.len());
    let (first, rest): (BTreeSet<String>, BTreeSet<String>) =
        (lines[..split].iter().cloned().collect(), lines[split..].iter().cloned().collect());
    assert_eq!((first, rest), (names, mounts), "identify {}: names first, then bind mounts:\n{printed}", container.pid);
    for path in runtime.netns_paths(container) {
        let shown = match path.strip_prefix("/run/netns") {
            Ok(name) => name.display().to_string(),
            Err(_) => path.display().to_string(),
        };
        assert!(lines.contains(&shown), "identify shows the runtime's {}: {printed}", path.display());
    }
}

/// `attach --all` with a guard for every name it may make for these pids; returns (name, inode) pairs printed.
fn attach_all(extra: &[&str], guards: &mut Vec<NetnsGuard>) -> Vec<(String, String)> {
    let mut args = vec!["attach", "--all"];
    args.extend_from_slice(extra);
    let out = ok(&args);
    let made: Vec<(String, String)> =
        out.lines().filter_map(|l| l.split_once('\t')).map(|(n, ns)| (n.to_owned(), ns.to_owned())).collect();
    guards.extend(made.iter().map(|(name, _)| NetnsGuard::new(name)));
    made
}

fn assert_named(made: &[(String, String)], container: &Container) {
    let (name, inode) = (container.netns_name(), container.inode());
    let path = Path::new("/run/netns").join(&name);
    assert!(
        made.contains(&(name.clone(), format!("net:[{inode}]"))),
        "attach --all prints {name}\tnet:[{inode}] for {}: {made:?}",
        container.name
    );
    let link = std::fs::read_link(&path).unwrap_or_else(|e| panic!("{} is a symlink: {e}", path.display()));
    assert_eq!(link, PathBuf::from(format!("/proc/{}/ns/net", container.pid)), "{name} points at the container's init");
    assert_eq!(inode_of(&path), Some(inode), "{name} is the container's namespace");
}

fn inode_of(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32)
}

fn attach_all_follows_the_containers(runtime: Arc<dyn Runtime>) {
    let (mut a, b) = (Running::start(Arc::clone(&runtime)), Running::start(Arc::clone(&runtime)));
    let (ca, cb) = (a.container.clone(), b.container.clone());
    let _our_names = AttachAllGuard { pids: vec![ca.pid, cb.pid] };
    let mut guards = vec![NetnsGuard::new(ca.netns_name()), NetnsGuard::new(cb.netns_name())];
    let made = attach_all(&[], &mut guards);
    assert_named(&made, &ca);
    assert_named(&made, &cb);
    let listed = ip_netns_list();
    assert!(listed.contains(&ca.netns_name()) && listed.contains(&cb.netns_name()), "ip netns list: {listed:?}");
    for container in [&ca, &cb] {
        let inside = sh_ok("ip", &["netns", "exec", &container.netns_name(), "ip", "addr"]);
        assert_eq!(inside, net::ip_addr(container.pid), "ip netns exec {} ip addr", container.netns_name());
        // Now with a name as well as whatever the runtime keeps.
        assert_identify(runtime.as_ref(), container);
    }

    // A person's name for B's namespace: a bind mount, which keeps that namespace even after B restarts.
    let person = unique_name("nsmc-person");
    let _person_guard = NetnsGuard::new(&person);
    sh_ok("ip", &["netns", "attach", &person, &cb.pid.to_string()]);

    a.restart();
    let ca2 = a.container.clone();
    // A symlink to the old init's /proc entry: it does not keep the old namespace, and no longer resolves.
    let ours = Path::new("/run/netns").join(ca.netns_name());
    assert!(std::fs::metadata(&ours).is_err(), "{} resolves after the restart, before attach --all", ours.display());
    let _new_names = AttachAllGuard { pids: vec![ca2.pid] };
    let made = attach_all(&[], &mut guards);
    assert_named(&made, &ca2);
    assert_eq!(inode_of(&Path::new("/run/netns").join(&person)), Some(cb.inode()), "the person's name is untouched");
    assert!(!made.iter().any(|(name, _)| *name == person), "attach --all never retargets {person}: {made:?}");

    a.remove();
    let pruned = attach_all(&["--prune"], &mut guards);
    let gone = Path::new("/run/netns").join(ca.netns_name());
    assert!(gone.symlink_metadata().is_err(), "attach --all --prune removes {} ({pruned:?})", gone.display());
    assert!(Path::new("/run/netns").join(cb.netns_name()).symlink_metadata().is_ok(), "B still runs: its name stays");
    assert_eq!(inode_of(&Path::new("/run/netns").join(&person)), Some(cb.inode()), "--prune leaves {person} alone");
}

fn exec_enters_the_container(runtime: Arc<dyn Runtime>) {
    let running = Running::start(runtime);
    let container = &running.container;
    let name = unique_name("nsmc-exec");
    let _guard = NetnsGuard::new(&name);
    ok(&["attach", &name, &container.pid.to_string()]);
    let ours = ok(&["exec", &name, "ip", "addr"]);
    assert_eq!(ours, net::ip_addr(container.pid), "netns-monitor exec {name} ip addr");
    let iproute = sh_ok("ip", &["netns", "exec", &name, "ip", "addr"]);
    assert_eq!(iproute, ours, "ip netns exec {name} ip addr");
}

async fn trace_shows_the_setns_into_the_container(runtime: Arc<dyn Runtime>) {
    let running = tokio::task::spawn_blocking({
        let runtime = Arc::clone(&runtime);
        move || Running::start(runtime)
    })
    .await
    .expect("start the container");
    let container = running.container.clone();
    let inode = container.inode();
    let mut trace = TraceProcess::start(&["--json", "--syscall", "setns", "--netns", &inode.to_string()]).await;
    let trace_pid = trace.child.id().expect("trace runs");
    let description = runtime.exec_description(&container, &["true"]);
    // The guard comes back from the blocking task, so the container outlives the trace.
    let exec = tokio::task::spawn_blocking(move || {
        running.exec_ok(&["true"]);
        running
    });
    let mut seen = Vec::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = trace.stdout.next_line().await.expect("read trace") {
            let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let into = event["namespaces"]["net"]["new"] == inode && event["errno"].is_null();
            let own = event["pid"] == trace_pid;
            seen.push(event.clone());
            if into && !own && !is_netns_monitor(event["pid"].as_u64()) {
                return event;
            }
        }
        panic!("trace ended")
    })
    .await;
    let _running = exec.await.expect("exec in the container");
    let event = found
        .unwrap_or_else(|_| panic!("no setns into {inode} for `{description}` within {DEADLINE:?}; saw {seen:#?}"));
    assert_eq!(event["syscall"], "setns", "{event}");
    // Beyond the setns itself: the name trace gives the namespace is the one list, stats and /metrics give it.
    let name = event["namespaces"]["net"]["new_name"].as_str();
    let listed = row(inode).map(|row| row["name"].clone()).unwrap_or_default();
    assert!(listed.as_str().is_some(), "list names the container's namespace {inode}: {listed}");
    assert_eq!(name, listed.as_str(), "trace's new_name is list's name for {inode}: {event}");
    assert!(!seen.iter().any(|e| e["pid"] == trace_pid), "trace shows its own setns calls: {seen:#?}");
}

/// Whether `pid` runs netns-monitor: another agent on the machine (another test's) enters every namespace to
/// attach its classifiers, and those setns calls are not the ones a test looks for.
fn is_netns_monitor(pid: Option<u64>) -> bool {
    let exe = pid.and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok());
    exe.is_some_and(|exe| exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("netns-monitor")))
}

/// The stats entry of `device` in namespace `netns`.
fn stats_interface(agent: &Agent, netns: u32, device: &str) -> Option<Value> {
    agent
        .stats()
        .into_iter()
        .find(|ns| ns["netns"] == netns)
        .and_then(|ns| ns["interfaces"].as_array()?.iter().find(|i| i["device"] == device).cloned())
}

fn attach_failures(agent: &Agent) -> f64 {
    agent.scrape().samples.iter().filter(|s| s.name == "netns_monitor_attach_failures_total").map(|s| s.value).sum()
}

async fn agent_counts_and_labels_the_container(runtime: Arc<dyn Runtime>) {
    let agent = Agent::start(&[]).await;
    assert_eq!(attach_failures(&agent), 0.0, "no attach failure before the container starts");
    let running = Running::start(Arc::clone(&runtime));
    let container = running.container.clone();
    let (inode, host) = (container.inode(), inode("/proc/self/ns/net"));
    let ends = [(inode, container.inner_if.clone()), (host, container.host_if.clone())];
    for (netns, device) in &ends {
        wait_until(DEADLINE, &format!("the agent to count {device} in {netns}"), || {
            stats_interface(&agent, *netns, device).is_some()
        });
    }
    running.exec_ok(&["ping", "-c", "3", "-W", "2", &container.gateway]);
    for (netns, device) in &ends {
        let start = Instant::now();
        loop {
            let kernel =
                if *netns == host { net::host_stats(device) } else { net::kernel_stats(container.pid, device) };
            let ours = agent_stats(&stats_interface(&agent, *netns, device).expect("still counted"));
            if ours == kernel {
                break;
            }
            if start.elapsed() >= DEADLINE {
                let uncounted: Vec<String> = agent
                    .scrape()
                    .samples
                    .iter()
                    .filter(|s| s.name == "netns_monitor_uncounted_packets_total")
                    .map(|s| format!("{:?}={}", s.labels.get("reason"), s.value))
                    .collect();
                panic!(
                    "{device} in {netns}: agent [rx_bytes, rx_packets, tx_bytes, tx_packets] = {ours:?}, kernel = \
                     {kernel:?} (uncounted packets: {uncounted:?}); agent log:\n{}",
                    agent.log().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let log = agent.log();
    let failed: Vec<&String> = log.iter().filter(|line| line.contains("cannot attach")).collect();
    assert!(failed.is_empty(), "the agent could not attach: {failed:#?}");
    assert_eq!(attach_failures(&agent), 0.0, "netns_monitor_attach_failures_total after the container started");

    let listed = row_of(&container);
    let scrape = agent.scrape();
    let info = scrape
        .samples
        .iter()
        .find(|s| s.name == "netns_monitor_netns_info" && s.labels.get("netns") == Some(&inode.to_string()))
        .unwrap_or_else(|| panic!("no netns_monitor_netns_info for {inode}"));
    let label = |key: &str| info.labels.get(key).cloned().unwrap_or_default();
    assert_eq!(
        [label("container_runtime"), label("container_id"), label("container_name")],
        [container.runtime.to_owned(), container.id.clone(), container.name.clone()],
        "container labels of {info:?}"
    );
    assert_eq!(Some(label("name").as_str()), listed["name"].as_str(), "name label as list's name: {info:?}");
    let stats = agent.stats().into_iter().find(|ns| ns["netns"] == inode).expect("stats has the namespace");
    assert_eq!(stats["name"], listed["name"], "stats --json name as list's name: {stats:#}");
}

/// `run --name-containers`: the agent keeps a /run/netns name for a container started while it runs, moves
/// it to the new namespace after a restart and removes it after the container is removed.
async fn agent_names_the_containers(runtime: Arc<dyn Runtime>) {
    let agent = Agent::start(&["--name-containers"]).await;
    let mut running = tokio::task::block_in_place(|| Running::start(Arc::clone(&runtime)));
    let first = running.container.clone();
    let name = first.netns_name();
    let path = Path::new("/run/netns").join(&name);
    let _guard = NetnsGuard::new(&name);
    let linked = |container: &Container| {
        std::fs::read_link(&path).ok() == Some(PathBuf::from(format!("/proc/{}/ns/net", container.pid)))
            && inode_of(&path) == Some(container.inode())
    };
    let wait = |what: String, mut condition: Box<dyn FnMut() -> bool + '_>| {
        let start = Instant::now();
        while !condition() {
            assert!(start.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}; agent log:\n{}", {
                agent.log().join("\n")
            });
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(format!("the agent to name {}'s namespace {name}", first.name), Box::new(|| linked(&first)));
    assert_identify(runtime.as_ref(), &first);

    tokio::task::block_in_place(|| running.restart());
    let second = running.container.clone();
    wait(format!("{name} to follow {} to its new init {}", second.name, second.pid), Box::new(|| linked(&second)));

    tokio::task::block_in_place(|| running.remove());
    wait(
        format!("the agent to remove {name} after {} is removed", second.name),
        Box::new(|| path.symlink_metadata().is_err()),
    );
    let log = agent.log();
    let failed: Vec<&String> = log.iter().filter(|line| line.contains("cannot")).collect();
    assert!(failed.is_empty(), "the agent failed at something: {failed:#?}");
}

fn restart_and_removal_show_in_list(runtime: Arc<dyn Runtime>) {
    let (mut a, b) = (Running::start(Arc::clone(&runtime)), Running::start(Arc::clone(&runtime)));
    assert_container_fields(&row_of(&a.container), &a.container);
    let (old_pid, old_inode) = (a.container.pid, a.container.inode());
    a.restart();
    check_oracle(runtime.as_ref(), &a.container);
    assert_ne!(a.container.pid, old_pid, "a new init process");
    assert_container_fields(&row_of(&a.container), &a.container);
    if a.container.inode() != old_inode {
        assert!(row(old_inode).is_none(), "the namespace before the restart ({old_inode}) is gone from list");
    }
    assert_container_fields(&row_of(&b.container), &b.container);

    let (b_inode, b_name) = (b.container.inode(), b.container.name.clone());
    b.remove();
    assert!(runtime.inspect(&b.container).is_none(), "{b_name} is removed");
    wait_until(DEADLINE, &format!("{b_name}'s namespace ({b_inode}) to leave list"), || row(b_inode).is_none());
}

macro_rules! runtime_tests {
    ($($module:ident => $fixture:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            fn runtime() -> Arc<dyn Runtime> {
                $fixture
            }

            #[test]
            fn list_and_identify_show_the_containers() {
                require_root();
                let _serial = scope::serial();
                super::list_and_identify(runtime());
            }

            #[test]
            fn attach_all_names_follow_restarts_and_prune() {
                require_root();
                let _serial = scope::serial();
                super::attach_all_follows_the_containers(runtime());
            }

            #[test]
            fn exec_enters_the_container() {
                require_root();
                let _serial = scope::serial();
                super::exec_enters_the_container(runtime());
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn trace_shows_the_setns_into_the_container() {
                require_root();
                let _serial = scope::serial_async().await;
                let runtime = tokio::task::spawn_blocking(runtime).await.expect("the runtime's fixture");
                super::trace_shows_the_setns_into_the_container(runtime).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn agent_counts_and_labels_the_container() {
                require_root();
                let _serial = scope::serial_async().await;
                let runtime = tokio::task::spawn_blocking(runtime).await.expect("the runtime's fixture");
                super::agent_counts_and_labels_the_container(runtime).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn agent_names_the_containers() {
                require_root();
                let _serial = scope::serial_async().await;
                let runtime = tokio::task::spawn_blocking(runtime).await.expect("the runtime's fixture");
                super::agent_names_the_containers(runtime).await;
            }

            #[test]
            fn restart_and_removal_show_in_list() {
                require_root();
                let _serial = scope::serial();
                super::restart_and_removal_show_in_list(runtime());
            }
        }
    )*};
}

runtime_tests! {
    docker => netns_monitor_tests::containers::docker::Docker::shared(),
    podman => netns_monitor_tests::containers::podman::Podman::shared(),
    lxc => netns_monitor_tests::containers::lxc::Lxc::shared(),
    runc => netns_monitor_tests::containers::runc::Runc::shared(),
    containerd => netns_monitor_tests::containers::ctr::Ctr::shared(),
    nspawn => netns_monitor_tests::containers::nspawn::Nspawn::shared(),
}
