//! LXC 5.0: the distribution's bridge (`lxc-net start`: `lxcbr0`, 10.0.3.0/24, dnsmasq for DHCP, its own nft
//! tables), containers made with the `busybox` template in a private LXC path of the run directory
//! (`lxc-create -P`), started as daemons whose monitor process (`[lxc monitor] PATH NAME`) supervises them.
//! Each container asks for its address with busybox's udhcpc, a few seconds after it starts.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
};

use super::{Container, Inspected, Runtime, STEP, command, net, ok, output, quiet, scope, wait_for};

const LXC_NET: &str = "/usr/libexec/lxc/lxc-net";
/// `lxc-net start` writes this once the bridge is up.
const NETWORK_UP: &str = "/run/lxc/network_up";
const BRIDGE: &str = "lxcbr0";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const LEASES: &str = "/var/lib/misc/dnsmasq.lxcbr0.leases";
/// The file of a run directory that says the run started `lxc-net` (it holds IP forwarding as it was).
pub const NET_STARTED: &str = "lxc-net-started";

/// Stops LXC's bridge and puts IP forwarding back to `ip_forward` (for a run that started it).
pub fn stop_net(ip_forward: &str) {
    quiet(&mut command(LXC_NET, &["stop"]));
    let _ = std::fs::write(IP_FORWARD, ip_forward);
    let _ = std::fs::remove_file(LEASES);
}

/// LXC with its bridge; dropping it destroys the containers and, if it started the bridge, stops it and puts
/// IP forwarding back as it found it.
pub struct Lxc {
    path: PathBuf,
    gateway: String,
    started_net: bool,
    ip_forward: String,
    made_run_lxc: bool,
}

impl Lxc {
    /// LXC for this test process (the bridge started on first use, stopped at exit).
    pub fn shared() -> Arc<Lxc> {
        static SLOT: Mutex<Option<Arc<Lxc>>> = Mutex::new(None);
        scope::shared(&SLOT, Lxc::start)
    }

    /// Starts LXC's bridge unless it is up already.
    pub fn start() -> Lxc {
        let path = scope::run_dir().join("lxc");
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let ip_forward = std::fs::read_to_string(IP_FORWARD).expect("read ip_forward").trim().to_owned();
        let made_run_lxc = !Path::new("/run/lxc").exists();
        let started_net = !Path::new(NETWORK_UP).exists();
        let mut lxc = Lxc { path, gateway: String::new(), started_net, ip_forward, made_run_lxc };
        if made_run_lxc {
            scope::note_made(Path::new("/run/lxc"));
        }
        if started_net {
            // Read by the next run if this one is killed: it stops the bridge and puts forwarding back.
            let marker = scope::run_dir().join(NET_STARTED);
            std::fs::write(&marker, &lxc.ip_forward).unwrap_or_else(|e| panic!("write {}: {e}", marker.display()));
            ok(&mut command(LXC_NET, &["start"]));
        }
        let address = ok(&mut command("ip", &["-o", "-4", "addr", "show", "dev", BRIDGE]));
        lxc.gateway = address
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next())
            .unwrap_or_else(|| panic!("{BRIDGE} has no IPv4 address after lxc-net start: {address}"))
            .to_owned();
        lxc
    }

    /// `lxc-TOOL -P PATH ARGS...`.
    pub fn tool(&self, tool: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(format!("lxc-{tool}"));
        cmd.arg("-P").arg(&self.path).args(args);
        cmd
    }

    /// `lxc-info -pH`: the container's init pid, if it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let state = output(&mut self.tool("info", &["-n", name, "-sH"]));
        if String::from_utf8_lossy(&state.stdout).trim() != "RUNNING" {
            return None;
        }
        let pid = output(&mut self.tool("info", &["-n", name, "-pH"]));
        String::from_utf8_lossy(&pid.stdout).trim().parse().ok()
    }

    fn describe(&self, name: &str) -> Container {
        let pid = wait_for(STEP, &format!("lxc-info to show {name} running"), || {
            self.pid(name).ok_or_else(|| {
                String::from_utf8_lossy(&output(&mut self.tool("info", &["-n", name])).stdout).into_owned()
            })
        });
        net::wait_ipv4(pid, "eth0");
        Container {
            runtime: "lxc",
            id: name.to_owned(),
            name: name.to_owned(),
            pid,
            inner_if: "eth0".to_owned(),
            host_if: net::host_peer(pid, "eth0"),
            gateway: self.gateway.clone(),
        }
    }
}

impl Runtime for Lxc {
    fn kind(&self) -> &'static str {
        "lxc"
    }

    fn start(&self, name: &str) -> Container {
        ok(&mut self.tool("create", &["-n", name, "-t", "busybox"]));
        ok(&mut self.tool("start", &["-n", name]));
        self.describe(name)
    }

    fn restart(&self, container: &Container) -> Container {
        ok(&mut self.tool("stop", &["-n", &container.name]));
        ok(&mut self.tool("start", &["-n", &container.name]));
        self.describe(&container.name)
    }

    fn remove(&self, container: &Container) {
        quiet(&mut self.tool("stop", &["-k", "-n", &container.name]));
        quiet(&mut self.tool("destroy", &["-f", "-n", &container.name]));
    }

    fn inspect(&self, container: &Container) -> Option<Inspected> {
        let pid = self.pid(&container.name)?;
        Some(Inspected { id: container.name.clone(), name: container.name.clone(), pid })
    }

    fn exec(&self, container: &Container, args: &[&str]) -> Output {
        output(self.tool("attach", &["-n", &container.name, "--"]).args(args))
    }

    fn exec_description(&self, container: &Container, args: &[&str]) -> String {
        format!("lxc-attach -n {} -- {}", container.name, args.join(" "))
    }
}

impl Drop for Lxc {
    fn drop(&mut self) {
        let names = output(&mut self.tool("ls", &["-1"]));
        for name in String::from_utf8_lossy(&names.stdout).split_whitespace() {
            quiet(&mut self.tool("stop", &["-k", "-n", name]));
            quiet(&mut self.tool("destroy", &["-f", "-n", name]));
        }
        super::leftovers::kill_referencing(&self.path);
        if self.started_net {
            stop_net(&self.ip_forward);
        }
        super::cgroups::remove("lxc.pivot");
        if self.made_run_lxc {
            let _ = std::fs::remove_dir_all("/run/lxc");
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
