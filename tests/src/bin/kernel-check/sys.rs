//! Small kernel-facing helpers that need nothing but the kernel (no iproute2 in the VM).

use std::{
    fs::File,
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns};

static MEMLOCK: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// Remembers RLIMIT_MEMLOCK as this process got it (64 KiB on 5.10), before loading raises it.
pub fn remember_memlock() {
    use nix::sys::resource::{Resource, getrlimit};
    if let Ok(limits) = getrlimit(Resource::RLIMIT_MEMLOCK) {
        let _ = MEMLOCK.set(limits);
    }
}

/// RLIMIT_MEMLOCK as this process got it, `[soft, hard]`, as text.
pub fn original_memlock() -> String {
    let show = |limit: u64| if limit == libc::RLIM_INFINITY { "unlimited".to_owned() } else { format!("{limit}") };
    MEMLOCK.get().map_or_else(|| "unknown".into(), |(soft, hard)| format!("{} {}", show(*soft), show(*hard)))
}

/// Gives `command` the RLIMIT_MEMLOCK this process started with, so the agent meets the limit an operator's
/// shell or init would give it, not the one this process raised.
pub fn with_original_memlock(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    if let Some(&(soft, hard)) = MEMLOCK.get() {
        // SAFETY: the closure only calls setrlimit, which is async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
    }
}

/// Moves this (still single-threaded) process into a new network namespace and a new mount namespace with a
/// private `/run/netns`, so that names made by the scenario and its sysctls stay inside.
pub fn isolate() -> nix::Result<()> {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET)?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
    std::fs::create_dir_all("/run/netns").map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    mount(Some("tmpfs"), "/run/netns", Some("tmpfs"), MsFlags::empty(), None::<&str>)
}

/// The host side of the scenario: loopback up (the agent's endpoint listens there) and IPv6 off, so that no
/// spontaneous packet (router solicitations, MLD) flows on the test's veths next to the counted traffic.
pub fn prepare_host() {
    if let Err(err) = link_up("lo") {
        println!("kernel-check: cannot bring lo up: {err}");
    }
    disable_ipv6();
}

/// Writes 1 to `net.ipv6.conf.{all,default}.disable_ipv6` of the calling thread's namespace (the kernel
/// resolves /proc/sys/net in the opener's namespace; a kernel without IPv6 has no such files: nothing to do).
pub fn disable_ipv6() {
    for scope in ["all", "default"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6"), "1");
    }
}

/// `/run/netns/NAME`.
pub fn named(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `work` on a new thread inside the network namespace at `netns` (`None`: this one).
pub fn in_netns<T: Send + 'static>(netns: Option<&Path>, work: impl FnOnce() -> T + Send + 'static) -> T {
    let file = netns.map(|path| File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display())));
    std::thread::spawn(move || {
        if let Some(file) = file {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
        }
        work()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The kernel's own counters of `device` in `netns`, as `[rx_bytes, rx_packets, tx_bytes, tx_packets]`, from
/// `/proc/thread-self/net/dev` read inside that namespace.
pub fn kernel_stats(netns: Option<&Path>, device: &str) -> [u64; 4] {
    let device = device.to_owned();
    in_netns(netns, move || {
        let table = std::fs::read_to_string("/proc/thread-self/net/dev").expect("read /proc/thread-self/net/dev");
        parse_net_dev(&table, &device).unwrap_or_else(|| panic!("{device} is not in /proc/net/dev:\n{table}"))
    })
}

/// `[rx_bytes, rx_packets, tx_bytes, tx_packets]` of `device` in a `/proc/net/dev` table: after `NAME:` come 8
/// receive fields (bytes, packets, ...) and then the transmit ones.
fn parse_net_dev(table: &str, device: &str) -> Option<[u64; 4]> {
    let line = table.lines().find_map(|line| line.trim_start().strip_prefix(&format!("{device}:")))?;
    let fields: Vec<u64> = line.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
    (fields.len() >= 10).then(|| [fields[0], fields[1], fields[8], fields[9]])
}

/// The ifindex of `device` in `netns`.
pub fn ifindex(netns: Option<&Path>, device: &str) -> u32 {
    let device = device.to_owned();
    in_netns(netns, move || nix::net::if_::if_nametoindex(device.as_str()).expect("if_nametoindex"))
}

/// Makes a veth the way container runtimes do, so that the agent hears of each step: the pair `host` +
/// `temporary` in this namespace, `temporary` moved into `netns`, renamed `inner` there, addressed and up,
/// then `host` addressed and up. IPv6 stays on: its first packets flow the moment the links are up.
/// `before_the_move` runs once the pair exists, before the peer is moved.
pub fn runtime_style_veth(
    host: &str,
    temporary: &str,
    netns: &Path,
    inner: &str,
    addresses: [(Ipv4Addr, u8); 2],
    before_the_move: impl FnOnce(),
) {
    use netns_monitor::manage::rtnl::Rtnl;
    use rtnetlink::{LinkUnspec, LinkVeth};
    let target = File::open(netns).unwrap_or_else(|e| panic!("open {}: {e}", netns.display()));
    let (host, temporary, inner) = (host.to_owned(), temporary.to_owned(), inner.to_owned());
    let ([host_address, inner_address], prefix) = (addresses.map(|(a, _)| a), addresses[0].1);
    let moved = temporary.clone();
    let host_name = host.clone();
    in_netns(None, move || {
        let rtnl = Rtnl::connect().expect("netlink");
        // A run that failed half-way may have left the pair here.
        for stale in [host_name.as_str(), moved.as_str()] {
            if let Ok(index) = nix::net::if_::if_nametoindex(stale) {
                let _ = rtnl.run(rtnl.handle.link().del(index).execute());
            }
        }
        rtnl.run(rtnl.handle.link().add(LinkVeth::new(&host_name, &moved).build()).execute()).expect("add the pair");
    });
    before_the_move();
    let moved = temporary.clone();
    in_netns(None, move || {
        let rtnl = Rtnl::connect().expect("netlink");
        let set = LinkUnspec::new_with_name(&moved).setns_by_fd(target.as_raw_fd()).build();
        rtnl.run(rtnl.handle.link().set(set).execute()).expect("move the peer");
    });
    in_netns(Some(netns), move || {
        let rtnl = Rtnl::connect().expect("netlink");
        let index = nix::net::if_::if_nametoindex(temporary.as_str()).expect("the moved peer");
        let rename = LinkUnspec::new_with_index(index).name(inner).build();
        rtnl.run(rtnl.handle.link().set(rename).execute()).expect("rename the peer");
        rtnl.run(rtnl.handle.address().add(index, inner_address.into(), prefix).execute()).expect("address");
        rtnl.run(rtnl.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute()).expect("up");
    });
    in_netns(None, move || {
        let rtnl = Rtnl::connect().expect("netlink");
        let index = nix::net::if_::if_nametoindex(host.as_str()).expect("the host end");
        rtnl.run(rtnl.handle.address().add(index, host_address.into(), prefix).execute()).expect("address");
        rtnl.run(rtnl.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute()).expect("up");
    });
}

/// Sets IFF_UP on `name` in the calling thread's namespace (SIOCSIFFLAGS, as `ifconfig NAME up`).
pub fn link_up(name: &str) -> io::Result<()> {
    // SAFETY: socket(2) has no memory preconditions; the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= request.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes ifru_flags of the ifreq we pass.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union's flags member was just written by the kernel.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_fields() {
        let table = "Inter-|   Receive  |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes \
                     packets\n    lo:       0       0    0    0    0     0          0         0        0       0    0 \
                     0    0     0       0          0\n  vp0:  4200  50  0 0 0 0 0 0  4300  51  0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(table, "vp0"), Some([4200, 50, 4300, 51]));
        assert_eq!(parse_net_dev(table, "lo"), Some([0, 0, 0, 0]));
        assert_eq!(parse_net_dev(table, "eth0"), None);
    }
}
