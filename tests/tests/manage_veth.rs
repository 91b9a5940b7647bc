//! `veth add`/`veth del`: a pair with addresses, MTU and a default route carries TCP both ways between host
//! and namespace; two namespaces reach each other through the forwarding host (the classic topology) or over a
//! direct pair; every bad input and a failure half-way are refused with nothing left behind.
//! Traffic only goes to addresses of namespaces each test creates.

use std::time::Duration;

use netns_monitor_tests::{
    netns::{NetnsGuard, addr, attached, connect, exchange, fails, listen, ok, port, serve_once, sh, sh_ok, subnet},
    require_root, unique_name,
};

const DEADLINE: Duration = Duration::from_secs(10);

fn link_exists(netns: Option<&str>, name: &str) -> bool {
    let mut args = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["link", "show", name]);
    sh("ip", &args).status.success()
}

#[test]
fn veth_pair_carries_tcp_both_ways() {
    require_root();
    let net = subnet(1);
    let name = unique_name("nsm-veth");
    let (host_if, peer_if) = (unique_name("h"), unique_name("p"));
    let _guard = NetnsGuard::new(&name).link(&host_if);
    ok(&["add", &name]);
    ok(&[
        "veth",
        "add",
        &host_if,
        &peer_if,
        "--netns",
        &name,
        "--mtu",
        "1400",
        "--address",
        &format!("{net}.1/24"),
        "--peer-address",
        &format!("{net}.2/24"),
        "--peer-gateway",
        &format!("{net}.1"),
    ]);

    let host_side = sh_ok("ip", &["addr", "show", &host_if]);
    assert!(host_side.contains(&format!("inet {net}.1/24")) && host_side.contains("mtu 1400"), "{host_side}");
    assert!(host_side.contains(",UP"), "host end up: {host_side}");
    let peer_side = sh_ok("ip", &["-n", &name, "addr", "show", &peer_if]);
    assert!(peer_side.contains(&format!("inet {net}.2/24")) && peer_side.contains("mtu 1400"), "{peer_side}");
    assert!(peer_side.contains(",UP"), "peer end up: {peer_side}");
    assert!(sh_ok("ip", &["-n", &name, "link", "show", "lo"]).contains(",UP"), "lo up");
    let routes = sh_ok("ip", &["-n", &name, "route", "show", "default"]);
    assert!(routes.contains(&format!("default via {net}.1 dev {peer_if}")), "{routes}");
    assert!(!link_exists(None, &peer_if), "the peer is not in the host namespace");

    // Namespace -> host.
    let listener = listen(None, addr(&format!("{net}.1"), port(1)));
    let served = serve_once(listener, "pong from host", DEADLINE);
    let stream = connect(Some(&name), addr(&format!("{net}.1"), port(1)), DEADLINE).expect("connect ns -> host");
    assert_eq!(exchange(stream, "ping from ns"), "pong from host");
    let (got, peer) = served.recv_timeout(DEADLINE).expect("host server got a connection");
    assert_eq!((got.as_str(), peer.ip().to_string()), ("ping from ns", format!("{net}.2")));

    // Host -> namespace.
    let listener = listen(Some(&name), addr(&format!("{net}.2"), port(2)));
    let served = serve_once(listener, "pong from ns", DEADLINE);
    let stream = connect(None, addr(&format!("{net}.2"), port(2)), DEADLINE).expect("connect host -> ns");
    assert_eq!(exchange(stream, "ping from host"), "pong from ns");
    let (got, peer) = served.recv_timeout(DEADLINE).expect("ns server got a connection");
    assert_eq!((got.as_str(), peer.ip().to_string()), ("ping from host", format!("{net}.1")));

    ok(&["veth", "del", &host_if]);
    assert!(!link_exists(None, &host_if), "host end deleted");
    assert!(!link_exists(Some(&name), &peer_if), "peer end deleted with it");
}

#[test]
fn two_namespaces_reach_each_other_through_the_host() {
    require_root();
    let (net_a, net_b) = (subnet(2), subnet(3));
    let (a, _a_if) = attached("nsm-a", &net_a);
    let (b, _b_if) = attached("nsm-b", &net_b);
    // The host routes between the two veths (the seeds' topology); nat/forward tests switch it on too.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("enable forwarding");

    let listener = listen(Some(&b.name), addr(&format!("{net_b}.2"), port(3)));
    let served = serve_once(listener, "pong from b", DEADLINE);
    let stream = connect(Some(&a.name), addr(&format!("{net_b}.2"), port(3)), DEADLINE).expect("connect a -> b");
    assert_eq!(exchange(stream, "ping from a"), "pong from b");
    let (got, peer) = served.recv_timeout(DEADLINE).expect("b got a connection");
    assert_eq!(got, "ping from a");
    assert_eq!(peer.ip().to_string(), format!("{net_a}.2"), "routed, not translated");
}

#[test]
fn veth_between_two_named_namespaces() {
    require_root();
    let net = subnet(4);
    let (a, b) = (unique_name("nsm-l"), unique_name("nsm-r"));
    let (_ga, _gb) = (NetnsGuard::new(&a), NetnsGuard::new(&b));
    let (a_if, b_if) = (unique_name("l"), unique_name("r"));
    ok(&["add", &a]);
    ok(&["add", &b]);
    ok(&[
        "veth",
        "add",
        &a_if,
        &b_if,
        "--host-netns",
        &a,
        "--netns",
        &b,
        "--address",
        &format!("{net}.1/24"),
        "--peer-address",
        &format!("{net}.2/24"),
    ]);
    assert!(sh_ok("ip", &["-n", &a, "addr", "show", &a_if]).contains(&format!("inet {net}.1/24")));
    assert!(sh_ok("ip", &["-n", &b, "addr", "show", &b_if]).contains(&format!("inet {net}.2/24")));
    assert!(!link_exists(None, &a_if) && !link_exists(None, &b_if), "nothing in the host namespace");

    let listener = listen(Some(&b), addr(&format!("{net}.2"), port(4)));
    let served = serve_once(listener, "pong", DEADLINE);
    let stream = connect(Some(&a), addr(&format!("{net}.2"), port(4)), DEADLINE).expect("connect a -> b");
    assert_eq!(exchange(stream, "ping"), "pong");
    assert_eq!(served.recv_timeout(DEADLINE).expect("served").1.ip().to_string(), format!("{net}.1"));

    ok(&["veth", "del", &a_if, "--host-netns", &a]);
    assert!(!link_exists(Some(&a), &a_if) && !link_exists(Some(&b), &b_if));
}

#[test]
fn bad_veth_input_is_refused_and_leaves_nothing() {
    require_root();
    let net = subnet(5);
    let name = unique_name("nsm-vbad");
    let (host_if, peer_if, taken) = (unique_name("h"), unique_name("p"), unique_name("d"));
    let _guard = NetnsGuard::new(&name).link(&host_if).link(&taken);
    ok(&["add", &name]);
    let base = |host: &str, peer: &str| -> Vec<String> {
        ["veth", "add", host, peer, "--netns", &name].map(str::to_owned).to_vec()
    };
    let refuse = |extra: &[&str], code: i32, expect: &str| {
        let mut args = base(&host_if, &peer_if);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = fails(&args, code);
        assert!(stderr.contains(expect), "{args:?}: expected {expect:?} in {stderr}");
        assert!(!link_exists(None, &host_if), "{args:?} left the host end behind");
        assert!(!link_exists(Some(&name), &peer_if), "{args:?} left the peer end behind");
    };
    refuse(&["--address", "10.0.0.1/33"], 2, "invalid value");
    refuse(&["--address", "10.0.0.300/24"], 2, "invalid value");
    refuse(&["--peer-gateway", "nonsense"], 2, "invalid value");
    refuse(
        &["--peer-address", &format!("{net}.2/24"), "--peer-gateway", "192.0.2.1"],
        2,
        "not inside the peer's network",
    );
    refuse(&["--peer-gateway", &format!("{net}.1")], 2, "needs --peer-address");
    refuse(&["--mtu", "20"], 2, "MTU 20 is out of range");
    let stderr = fails(&["veth", "add", "much-too-long-name0", &peer_if, "--netns", &name], 2);
    assert!(stderr.contains("invalid interface name"), "{stderr}");
    let stderr = fails(&["veth", "add", &host_if, &peer_if, "--netns", "nsm-no-such-ns"], 2);
    assert!(stderr.contains("namespace \"nsm-no-such-ns\" does not exist"), "{stderr}");
    assert!(!link_exists(None, &host_if));

    // Host end's name taken on the host: refused, and the existing interface is left alone.
    sh_ok("ip", &["link", "add", &taken, "type", "bridge"]);
    let stderr = fails(&["veth", "add", &taken, &peer_if, "--netns", &name], 2);
    assert!(stderr.contains(&format!("interface {taken:?} already exists in the current namespace")), "{stderr}");
    assert!(sh_ok("ip", &["-d", "link", "show", &taken]).contains("bridge"), "the taken name is still the bridge");
    assert!(!link_exists(Some(&name), &peer_if));
    // And veth del refuses to delete what is not a veth.
    let stderr = fails(&["veth", "del", &taken], 2);
    assert!(stderr.contains("not a veth"), "{stderr}");
    assert!(link_exists(None, &taken));
    assert!(fails(&["veth", "del", &host_if], 2).contains("does not exist"));

    // Peer name taken inside the namespace.
    sh_ok("ip", &["-n", &name, "link", "add", &peer_if, "type", "bridge"]);
    let stderr = fails(&["veth", "add", &host_if, &peer_if, "--netns", &name], 2);
    assert!(stderr.contains(&format!("interface {peer_if:?} already exists in namespace {name:?}")), "{stderr}");
    assert!(!link_exists(None, &host_if), "no host end left behind");
    sh_ok("ip", &["-n", &name, "link", "del", &peer_if]);

    // A failure after the pair exists (the namespace already has a default route): everything is undone.
    sh_ok("ip", &["-n", &name, "route", "add", "default", "dev", "lo"]);
    let args = [
        "veth",
        "add",
        &host_if,
        &peer_if,
        "--netns",
        &name,
        "--address",
        &format!("{net}.1/24"),
        "--peer-address",
        &format!("{net}.2/24"),
        "--peer-gateway",
        &format!("{net}.1"),
    ];
    let stderr = fails(&args, 1);
    assert!(stderr.contains("cannot add the default route"), "{stderr}");
    assert!(!link_exists(None, &host_if), "the host end created in step 1 was removed");
    assert!(!link_exists(Some(&name), &peer_if), "the peer end was removed");
    assert!(!sh_ok("ip", &["addr"]).contains(&format!("{net}.1/24")), "no address left on the host");
}
