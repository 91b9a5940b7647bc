//! The few bpf(2) calls the benchmarks make themselves, without aya (xtask does not link the agent):
//! an empty classifier to measure the floor of the kernel's per-run statistics, TCX attachment, program
//! statistics, and a query of what is attached to an interface (to prove a baseline runs without programs).
//!
//! Constants and layouts are the kernel's UAPI (`include/uapi/linux/bpf.h`); the values of the TCX attach
//! types and the offsets in `bpf_prog_info` were checked against this kernel's BTF
//! (`bpftool btf dump file /sys/kernel/btf/vmlinux`: BPF_TCX_INGRESS=46, run_time_ns at bit 1536).

use std::{
    ffi::CString,
    fs::File,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
const BPF_STATS_RUN_TIME: u32 = 0;

/// `bpf(cmd, attr, size)`; `attr` is one of the `#[repr(C)]` attribute structs below.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i32> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] struct laid out like the kernel's union member for
    // `cmd`, and its size is passed along; pointers inside it point to buffers that outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>() as u32) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret as i32) }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    count: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

#[repr(C)]
#[derive(Default)]
struct StatsAttr {
    stats_type: u32,
}

/// Offsets in `struct bpf_prog_info` (Linux 6.18: 232 bytes; these fields date from 5.1).
const INFO_RUN_TIME_NS: usize = 192;
const INFO_RUN_CNT: usize = 200;
const INFO_LEN: usize = 208;

/// Loads `r0 = -1 (TCX_NEXT); exit`: a classifier that does nothing and passes every packet on.
pub fn load_empty_classifier() -> anyhow::Result<OwnedFd> {
    // BPF_ALU64 | BPF_MOV | BPF_K into r0, imm -1; then BPF_JMP | BPF_EXIT.
    let insns: [u64; 2] = [0xb7 | (u64::from(-1i32 as u32) << 32), 0x95];
    let license = CString::new("GPL").expect("no NUL");
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"nm_bench_");
    name[9..14].copy_from_slice(b"empty");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..ProgLoadAttr::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr).context("cannot load the empty classifier")?;
    Ok(owned(fd))
}

/// Attaches `prog` at the end of interface `ifindex`'s TCX chain in the calling thread's namespace; the
/// link lives as long as the returned fd.
pub fn attach_tcx(prog: &OwnedFd, ifindex: u32, ingress: bool) -> anyhow::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: if ingress { BPF_TCX_INGRESS } else { BPF_TCX_EGRESS },
        ..LinkCreateAttr::default()
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr).context("cannot attach the empty classifier (TCX link)")?;
    Ok(owned(fd))
}

/// Run time (ns) and run count of a program, from the kernel's statistics.
pub fn prog_stats(prog: &OwnedFd) -> anyhow::Result<(u64, u64)> {
    let mut info = [0u8; INFO_LEN];
    let mut attr =
        InfoAttr { bpf_fd: prog.as_raw_fd() as u32, info_len: INFO_LEN as u32, info: info.as_mut_ptr() as u64 };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("cannot read program info")?;
    let field = |at: usize| u64::from_ne_bytes(info[at..at + 8].try_into().expect("8 bytes"));
    Ok((field(INFO_RUN_TIME_NS), field(INFO_RUN_CNT)))
}

/// Turns the kernel's per-program run-time statistics on while the returned fd is open.
pub fn enable_stats() -> anyhow::Result<OwnedFd> {
    let mut attr = StatsAttr { stats_type: BPF_STATS_RUN_TIME };
    let fd = bpf(BPF_ENABLE_STATS, &mut attr).context("cannot enable BPF run-time statistics")?;
    Ok(owned(fd))
}

/// Number of programs in interface `ifindex`'s TCX chain (calling thread's namespace).
pub fn tcx_programs(ifindex: u32, ingress: bool) -> anyhow::Result<u32> {
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type: if ingress { BPF_TCX_INGRESS } else { BPF_TCX_EGRESS },
        ..QueryAttr::default()
    };
    match bpf(BPF_PROG_QUERY, &mut attr) {
        Ok(_) => Ok(attr.count),
        // No TCX entry on the device yet.
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(0),
        Err(err) => Err(err).context("cannot query the TCX chain"),
    }
}

/// Runs `work` on a thread inside the named namespace (`/run/netns/NAME`).
pub fn in_netns<T: Send>(name: &str, work: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    let file = File::open(format!("/run/netns/{name}")).with_context(|| format!("cannot open namespace {name}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid namespace fd, affecting only this short-lived thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("cannot enter namespace {name}: {}", io::Error::last_os_error());
            }
            work()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Interface index of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name).context("interface name with NUL")?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no interface {name}: {}", io::Error::last_os_error());
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_layouts_match_the_uapi() {
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(size_of::<LinkCreateAttr>(), 32);
        assert_eq!(size_of::<InfoAttr>(), 16);
        assert_eq!(size_of::<QueryAttr>(), 64);
    }
}
