//! `nat` and `forward`: with one namespace acting as the outside world and one as the target, traffic to a host
//! port reaches a server in the target and masqueraded traffic from the target arrives from the host's address;
//! after `del` neither happens. Rules are idempotent, named after their namespace, and go with it.
//! nft is the independent oracle for the ruleset; traffic only goes to the test's own namespaces.

use std::time::Duration;

use netns_monitor_tests::{
    netns::{NetnsGuard, addr, attached, connect, exchange, fails, listen, nft_rules_of, ok, port, serve_once, subnet},
    require_root, unique_name,
};

const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn forward_brings_outside_traffic_into_the_namespace_until_deleted() {
    require_root();
    let (outside_net, target_net) = (subnet(20), subnet(21));
    let (outside, _) = attached("nsm-out", &outside_net);
    let (target, _) = attached("nsm-tgt", &target_net);
    let (host_port, ns_port) = (port(20), port(21));

    let out = ok(&["forward", "add", &target.name, "--port", &format!("{host_port}:{ns_port}/tcp")]);
    assert!(out.contains(&format!("{target_net}.2:{ns_port}")), "forwards to the namespace's address: {out}");
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap().trim(), "1", "forwarding on");
    let rules = nft_rules_of(&target.name);
    assert!(
        rules
            .iter()
            .any(|(chain, rule)| chain == "prerouting" && rule.contains(&format!("dnat to {target_net}.2:{ns_port}"))),
        "nft shows the DNAT rule: {rules:#?}"
    );

    // The outside world connects to the host's address on its side; the server in the target answers.
    let host_addr = addr(&format!("{outside_net}.1"), host_port);
    let listener = listen(Some(&target.name), addr("0.0.0.0", ns_port));
    let served = serve_once(listener, "pong from target", DEADLINE);
    let stream = connect(Some(&outside.name), host_addr, DEADLINE).expect("outside -> host port");
    assert_eq!(exchange(stream, "ping from outside"), "pong from target");
    let (got, peer) = served.recv_timeout(DEADLINE).expect("the target's server got the connection");
    assert_eq!(got, "ping from outside");
    assert_eq!(peer.ip().to_string(), format!("{outside_net}.2"), "DNAT keeps the client's address");

    ok(&["forward", "del", &target.name]);
    assert!(nft_rules_of(&target.name).is_empty(), "rules gone");
    // Nothing listens on the host port itself, so without the rule the connection is refused.
    let _listener = listen(Some(&target.name), addr("0.0.0.0", ns_port));
    assert!(connect(Some(&outside.name), host_addr, Duration::from_secs(1)).is_err(), "no longer forwarded");
}

#[test]
fn nat_masquerades_namespace_traffic_until_deleted() {
    require_root();
    let (outside_net, target_net) = (subnet(22), subnet(23));
    let (outside, outside_if) = attached("nsm-out", &outside_net);
    let (target, _) = attached("nsm-tgt", &target_net);

    let out = ok(&["nat", "add", &target.name, "--out", &outside_if]);
    assert!(out.contains(&format!("{target_net}.0/24")), "masquerades the namespace's subnet: {out}");
    let rules = nft_rules_of(&target.name);
    assert!(
        rules.iter().any(|(chain, rule)| chain == "postrouting"
            && rule.contains(&format!("ip saddr {target_net}.0/24 oifname \"{outside_if}\""))
            && rule.contains("masquerade")),
        "nft shows the masquerade rule: {rules:#?}"
    );

    let server = addr(&format!("{outside_net}.2"), port(22));
    let talk = |reply: &'static str| {
        let listener = listen(Some(&outside.name), server);
        let served = serve_once(listener, reply, DEADLINE);
        let stream = connect(Some(&target.name), server, DEADLINE).expect("target -> outside");
        assert_eq!(exchange(stream, "ping"), reply);
        served.recv_timeout(DEADLINE).expect("the outside server got the connection").1.ip().to_string()
    };
    assert_eq!(talk("masqueraded"), format!("{outside_net}.1"), "seen as the host's address on the way out");

    ok(&["nat", "del", &target.name]);
    assert!(nft_rules_of(&target.name).is_empty());
    assert_eq!(talk("routed"), format!("{target_net}.2"), "after del: the namespace's own address");
}

#[test]
fn rules_are_idempotent_and_go_with_the_namespace() {
    require_root();
    let net = subnet(24);
    let (target, host_if) = attached("nsm-idem", &net);
    let (p1, p2) = (port(23), port(24));
    for _ in 0..2 {
        ok(&["nat", "add", &target.name, "--out", &host_if]);
        ok(&["forward", "add", &target.name, "--port", &format!("{p1}:80")]);
        ok(&["forward", "add", &target.name, "--port", &format!("{p2}:53/udp")]);
    }
    let rules = nft_rules_of(&target.name);
    let count = |tag: &str| rules.iter().filter(|(_, r)| r.contains(&format!("comment \"{tag}\""))).count();
    assert_eq!(count(&format!("nat/{}", target.name)), 3, "masquerade + two forward accepts, once: {rules:#?}");
    assert_eq!(count(&format!("forward/{}/{p1}/tcp", target.name)), 3, "prerouting, output, forward: {rules:#?}");
    assert_eq!(count(&format!("forward/{}/{p2}/udp", target.name)), 3);
    assert_eq!(rules.len(), 9);

    // Deleting one forward leaves the rest.
    ok(&["forward", "del", &target.name, "--port", &format!("{p2}/udp")]);
    assert_eq!(nft_rules_of(&target.name).len(), 6);

    ok(&["del", &target.name]);
    assert!(nft_rules_of(&target.name).is_empty(), "del NAME removes its nat and forward rules");
}

#[test]
fn bad_nat_input_is_refused() {
    require_root();
    let missing = unique_name("nsm-none");
    assert!(
        fails(&["nat", "add", &missing, "--out", "lo"], 2).contains(&format!("namespace {missing:?} does not exist"))
    );
    assert!(fails(&["forward", "add", &missing, "--port", "8080:80"], 2).contains("does not exist"));
    assert!(
        fails(&["forward", "add", &missing, "--port", "99999:80"], 2).contains("ports are numbers from 1 to 65535")
    );
    assert!(fails(&["forward", "add", &missing, "--port", "8080"], 2).contains("HOST_PORT:NS_PORT"));
    assert!(fails(&["forward", "add", &missing, "--port", "8080:80/sctp"], 2).contains("tcp or udp"));
    assert!(fails(&["nat", "add", &missing, "--out", "bad/name"], 2).contains("invalid interface name"));

    let name = unique_name("nsm-noaddr");
    let _guard = NetnsGuard::new(&name);
    ok(&["add", &name]);
    let stderr = fails(&["nat", "add", &name, "--out", "lo"], 2);
    assert!(stderr.contains("has no global IPv4 address"), "{stderr}");
    assert!(nft_rules_of(&name).is_empty(), "nothing added");
    assert!(fails(&["nat", "del", &name], 2).contains(&format!("no nat rules for namespace {name:?}")));
    assert!(fails(&["forward", "del", &name], 2).contains("no port forwards"));
}

/// A typo in --out must not replace a working rule with one that matches nothing, and a host port forwarded to
/// one namespace cannot be taken by another (its rule would be dead); the owner may replace its own.
#[test]
fn nat_to_a_missing_interface_and_a_taken_port_are_refused() {
    require_root();
    let (a, a_if) = attached("nsm-nat-a", &subnet(61));
    let (b, _b_if) = attached("nsm-nat-b", &subnet(62));
    ok(&["nat", "add", &a.name, "--out", &a_if]);
    let before = nft_rules_of(&a.name);
    let stderr = fails(&["nat", "add", &a.name, "--out", "nonexist0"], 2);
    assert!(stderr.contains("interface \"nonexist0\" does not exist"), "{stderr}");
    assert_eq!(nft_rules_of(&a.name), before, "the working rule stays");
    ok(&["nat", "add", &a.name, "--out", "nonexist0", "--allow-missing-out"]);
    assert!(nft_rules_of(&a.name).iter().any(|(_, rule)| rule.contains("nonexist0")), "accepted with the flag");

    let host_port = port(63);
    ok(&["forward", "add", &a.name, "--port", &format!("{host_port}:9000/tcp")]);
    let stderr = fails(&["forward", "add", &b.name, "--port", &format!("{host_port}:9000/tcp")], 2);
    assert!(stderr.contains(&format!("port {host_port}/tcp already forwards to namespace {:?}", a.name)), "{stderr}");
    assert!(nft_rules_of(&b.name).is_empty(), "nothing added for the second namespace");
    // Another protocol on the same port is another forward; the owner replacing its own is fine.
    ok(&["forward", "add", &b.name, "--port", &format!("{host_port}:9000/udp")]);
    ok(&["forward", "add", &a.name, "--port", &format!("{host_port}:9001/tcp")]);
}
