//! The kernel as the oracle inside a container's network namespace, entered by the container's init pid with
//! `nsenter` (no name needed), and veths added by hand for the runtimes that make none (runc, ctr) or leave
//! theirs unconfigured (systemd-nspawn without networkd).

use std::sync::atomic::{AtomicU8, Ordering};

use super::{command, ok, wait_for};

/// `nsenter -t PID -n ARGS...`: a host program run in the container's network namespace.
pub fn nsenter(pid: u32, args: &[&str]) -> std::process::Command {
    let mut cmd = command("nsenter", &["-t", &pid.to_string(), "-n"]);
    cmd.args(args);
    cmd
}

/// `ip -o link` inside the container: the interface names the kernel shows (`eth0@if7` read as `eth0`).
pub fn links(pid: u32) -> Vec<String> {
    ok(&mut nsenter(pid, &["ip", "-o", "link"]))
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

/// `ip addr` inside the container, as iproute2 prints it.
pub fn ip_addr(pid: u32) -> String {
    ok(&mut nsenter(pid, &["ip", "addr"]))
}

/// The kernel's counters of `device` inside the container, from a sysfs mounted for its namespace (as
/// `ip netns exec` does): (rx_bytes, rx_packets, tx_bytes, tx_packets).
pub fn kernel_stats(pid: u32, device: &str) -> [u64; 4] {
    let script = format!(
        "mount -t sysfs sysfs /sys && cd /sys/class/net/{device}/statistics && cat rx_bytes rx_packets tx_bytes \
         tx_packets"
    );
    let out = ok(&mut nsenter(pid, &["unshare", "--mount", "--propagation", "private", "sh", "-c", &script]));
    parse_stats(&out, device)
}

/// The kernel's counters of host interface `device` (this process's namespace and its /sys).
pub fn host_stats(device: &str) -> [u64; 4] {
    let read = |counter: &str| {
        let path = format!("/sys/class/net/{device}/statistics/{counter}");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    };
    parse_stats(&["rx_bytes", "rx_packets", "tx_bytes", "tx_packets"].map(read).join("\n"), device)
}

fn parse_stats(text: &str, device: &str) -> [u64; 4] {
    let values: Vec<u64> = text
        .split_whitespace()
        .map(|v| v.parse().unwrap_or_else(|e| panic!("counter of {device}: {e}: {text:?}")))
        .collect();
    values.try_into().unwrap_or_else(|v| panic!("four counters of {device}, got {v:?}"))
}

/// The host-side peer of veth `inner` of the container: `inner@ifN` names the peer's ifindex in the host.
pub fn host_peer(pid: u32, inner: &str) -> String {
    let line = ok(&mut nsenter(pid, &["ip", "-o", "link", "show", "dev", inner]));
    let index = line
        .split(": ")
        .nth(1)
        .and_then(|name| name.split("@if").nth(1))
        .unwrap_or_else(|| panic!("{inner} in the container is not a veth: {line}"))
        .to_owned();
    std::fs::read_dir("/sys/class/net")
        .expect("read /sys/class/net")
        .flatten()
        .find(|e| std::fs::read_to_string(e.path().join("ifindex")).is_ok_and(|i| i.trim() == index))
        .and_then(|e| e.file_name().into_string().ok())
        .unwrap_or_else(|| panic!("no host interface with ifindex {index} (peer of {inner}): {line}"))
}

/// Waits until `device` inside the container has an IPv4 address (DHCP, for LXC) and returns it.
pub fn wait_ipv4(pid: u32, device: &str) -> String {
    wait_for(super::STEP, &format!("an IPv4 address on {device} of pid {pid}"), || {
        let out = ok(&mut nsenter(pid, &["ip", "-o", "-4", "addr", "show", "dev", device]));
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .map(|cidr| cidr.split('/').next().unwrap_or(cidr).to_owned())
            .ok_or(out)
    })
}

/// A /24 for a container's by-hand veth, different for each container of this process (see
/// [`crate::netns::subnet`]: `10.A.B`, `B` counting up from 200).
pub fn next_subnet() -> String {
    static NEXT: AtomicU8 = AtomicU8::new(200);
    let index = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(index >= 200, "more than 55 containers in one test process");
    crate::netns::subnet(index)
}

/// A veth `host` (in the host, `NET.1/24`) to `inner` inside the container of `pid` (`NET.2/24`, default
/// route via the host), IPv6 off on both ends so that nothing but the test's own traffic flows. Returns the
/// gateway address.
pub fn add_veth(pid: u32, host: &str, inner: &str, net: &str) -> String {
    let pid_arg = pid.to_string();
    ok(&mut command("ip", &["link", "add", host, "type", "veth", "peer", "name", inner, "netns", &pid_arg]));
    configure(pid, host, inner, net)
}

/// Addresses an existing veth pair (`host` in the host, `inner` in the container) as [`add_veth`] does.
pub fn configure(pid: u32, host: &str, inner: &str, net: &str) -> String {
    let gateway = format!("{net}.1");
    ok(&mut command("sysctl", &["-qw", &format!("net.ipv6.conf.{host}.disable_ipv6=1")]));
    ok(&mut command("ip", &["addr", "add", &format!("{gateway}/24"), "dev", host]));
    ok(&mut command("ip", &["link", "set", host, "up"]));
    let inside = format!(
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 && \
         ip addr add {net}.2/24 dev {inner} && ip link set {inner} up && ip link set lo up && \
         ip route add default via {gateway}"
    );
    ok(&mut nsenter(pid, &["sh", "-c", &inside]));
    gateway
}
