//! Hook tiers: which kernel hooks carry the transition and lifecycle events, chosen at load time by what the
//! kernel accepts.
//!
//! - **Tier 1, `fentry`**: fentry/fexit on the x86_64 syscall functions (`__x64_sys_setns`, ...), plus
//!   `fexit/copy_net_ns` and `fentry/netdev_exit` for every network namespace's creation and destruction. A
//!   trampoline runs only when its function is called, so the other syscalls pay nothing.
//! - **Tier 2, `tracepoint`**: the `syscalls/sys_{enter,exit}_*` tracepoints. Any program there puts every
//!   syscall of every thread on the traced slow path. Destruction comes from the kernel too, from the work the
//!   IPv4 teardown of every namespace queues (`raw_tracepoint/workqueue_queue_work`, which needs
//!   `fqdir_work_fn`'s address from `/proc/kallsyms`); where that is hidden (`kptr_restrict`) or refused, from
//!   userspace (netns ids, and nsfs file handles where the kernel has them, see `crate::lifecycle`).
//!
//! `auto` tries tier 1 and falls back to tier 2 when the kernel refuses it (a policy that denies fentry with
//! EPERM, a kernel without BTF trampolines, a function missing from its BTF, another architecture); the reason is
//! logged and exported (`netns_monitor_hook_info`).

use std::{fmt, str::FromStr};

/// What the operator asked for (`--hooks`, or `hooks:` in the agent's configuration file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum HookChoice {
    /// Tier 1 where the kernel accepts it, else tier 2.
    #[default]
    Auto,
    /// Tier 1 or fail.
    Fentry,
    /// Tier 2 even where tier 1 would load (tests, and kernels where fentry misbehaves).
    Tracepoint,
}

impl HookChoice {
    pub const NAMES: [&'static str; 3] = ["auto", "fentry", "tracepoint"];
}

impl FromStr for HookChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(HookChoice::Auto),
            "fentry" => Ok(HookChoice::Fentry),
            "tracepoint" => Ok(HookChoice::Tracepoint),
            other => Err(format!("unknown hook tier {other:?} (expected one of: {})", Self::NAMES.join(", "))),
        }
    }
}

impl TryFrom<String> for HookChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for HookChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookChoice::Auto => "auto",
            HookChoice::Fentry => "fentry",
            HookChoice::Tracepoint => "tracepoint",
        })
    }
}

/// The tier that was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    Fentry,
    Tracepoint,
}

impl Tier {
    /// 1 or 2.
    pub fn number(self) -> u8 {
        match self {
            Tier::Fentry => 1,
            Tier::Tracepoint => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Fentry => "fentry",
            Tier::Tracepoint => "tracepoint",
        }
    }
}

/// Where network namespaces' destructions are reported from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destruction {
    /// Tier 1: `fentry/netdev_exit`.
    NetdevExit,
    /// Tier 2: the work each namespace's IPv4 teardown queues ([`QUEUED_EXIT`]).
    QueuedWork,
    /// Tier 2 without [`QUEUED_EXIT`]: userspace, from netns ids and nsfs file handles (`crate::lifecycle`).
    NetnsId,
}

impl Destruction {
    /// The `destruction` label of `netns_monitor_hook_info`.
    pub fn label(self) -> &'static str {
        match self {
            Destruction::NetdevExit | Destruction::QueuedWork => "kernel",
            Destruction::NetnsId => "netns-id",
        }
    }

    /// The hook, for logs.
    pub fn hook(self) -> &'static str {
        match self {
            Destruction::NetdevExit => "fentry/netdev_exit",
            Destruction::QueuedWork => "raw_tracepoint/workqueue_queue_work (fqdir_work_fn)",
            Destruction::NetnsId => "RTM_DELNSID and nsfs file handles (userspace)",
        }
    }
}

/// The tier in use, and why tier 1 is not (when it is not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookInfo {
    pub tier: Tier,
    pub chosen: HookChoice,
    /// Why tier 1 was not used: "forced" or the kernel's refusal, one line.
    pub fallback: Option<String>,
    pub destruction: Destruction,
    /// Why tier 2's destruction probe is not used (when it is not), one line.
    pub destruction_fallback: Option<String>,
}

impl HookInfo {
    /// Whether the kernel programs report every network namespace's destruction themselves (else userspace
    /// must, see `crate::lifecycle`).
    pub fn reports_destruction(&self) -> bool {
        self.destruction != Destruction::NetnsId
    }

    /// The programs to attach, in order: the tier's, after tier 2's destruction probe where it is used.
    pub fn programs(&self) -> Vec<&'static Spec> {
        let probe = (self.destruction == Destruction::QueuedWork).then_some(&QUEUED_EXIT);
        probe.into_iter().chain(self.tier.programs()).collect()
    }
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug)]
pub enum Hook {
    TracePoint {
        category: &'static str,
        event: &'static str,
    },
    RawTracePoint(&'static str),
    /// fentry on a kernel function.
    FEntry(Function),
    /// fexit on a kernel function.
    FExit(Function),
}

/// A kernel function a tier-1 program attaches to.
#[derive(Clone, Copy, Debug)]
pub enum Function {
    /// The syscall wrapper of this architecture for syscall NAME (`__x64_sys_NAME` on x86_64).
    Syscall(&'static str),
    Kernel(&'static str),
}

impl Function {
    /// The function's name in this kernel's BTF; `None` where this architecture has no known wrapper prefix.
    pub fn name(self) -> Option<String> {
        match self {
            Function::Syscall(name) => SYSCALL_PREFIX.map(|prefix| format!("{prefix}{name}")),
            Function::Kernel(name) => Some(name.to_owned()),
        }
    }
}

/// Prefix of the syscall wrappers (`SYSCALL_DEFINE` with `ARCH_HAS_SYSCALL_WRAPPER`), whose one argument is the
/// caller's `struct pt_regs`. Only x86_64's register offsets are computed (`super::offsets`), so only x86_64
/// runs tier 1's syscall programs.
#[cfg(target_arch = "x86_64")]
const SYSCALL_PREFIX: Option<&str> = Some("__x64_sys_");
#[cfg(not(target_arch = "x86_64"))]
const SYSCALL_PREFIX: Option<&str> = None;

/// One program of the object and its hook.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub program: &'static str,
    pub hook: Hook,
}

const fn syscall_tp(program: &'static str) -> Spec {
    Spec { program, hook: Hook::TracePoint { category: "syscalls", event: program } }
}

const FORK: Spec = Spec { program: "sched_process_fork", hook: Hook::RawTracePoint("sched_process_fork") };

/// Tier 2's destruction probe (`netns-monitor-ebpf/src/netns.rs`), attached before the tier's programs for the
/// reason [`FENTRY`] has `netdev_exit` first.
pub const QUEUED_EXIT: Spec = Spec { program: "netns_exit_queued", hook: Hook::RawTracePoint("workqueue_queue_work") };

/// The kernel function whose queued work marks a namespace's teardown (see [`QUEUED_EXIT`]).
pub const QUEUED_EXIT_FUNCTION: &str = "fqdir_work_fn";

/// Tier 2, in attach order: exits and the fork hook before the entries that fill `PENDING`, so no entry is
/// recorded that nothing would complete.
pub const TRACEPOINTS: &[Spec] = &[
    syscall_tp("sys_exit_setns"),
    syscall_tp("sys_exit_unshare"),
    syscall_tp("sys_exit_clone"),
    syscall_tp("sys_exit_clone3"),
    FORK,
    syscall_tp("sys_enter_setns"),
    syscall_tp("sys_enter_unshare"),
    syscall_tp("sys_enter_clone"),
    syscall_tp("sys_enter_clone3"),
];

const fn fexit(program: &'static str, syscall: &'static str) -> Spec {
    Spec { program, hook: Hook::FExit(Function::Syscall(syscall)) }
}

const fn fentry(program: &'static str, syscall: &'static str) -> Spec {
    Spec { program, hook: Hook::FEntry(Function::Syscall(syscall)) }
}

/// Tier 1, in the same order; destruction before creation, so that no namespace is reported created whose end
/// nothing would see.
pub const FENTRY: &[Spec] = &[
    Spec { program: "fentry_netdev_exit", hook: Hook::FEntry(Function::Kernel("netdev_exit")) },
    Spec { program: "fexit_copy_net_ns", hook: Hook::FExit(Function::Kernel("copy_net_ns")) },
    fexit("fexit_setns", "setns"),
    fexit("fexit_unshare", "unshare"),
    fexit("fexit_clone", "clone"),
    fexit("fexit_clone3", "clone3"),
    FORK,
    fentry("fentry_setns", "setns"),
    fentry("fentry_unshare", "unshare"),
    fentry("fentry_clone", "clone"),
    fentry("fentry_clone3", "clone3"),
];

impl Tier {
    pub fn programs(self) -> &'static [Spec] {
        match self {
            Tier::Fentry => FENTRY,
            Tier::Tracepoint => TRACEPOINTS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print() {
        for name in HookChoice::NAMES {
            assert_eq!(name.parse::<HookChoice>().unwrap().to_string(), name);
        }
        assert!("kprobe".parse::<HookChoice>().unwrap_err().contains("auto, fentry, tracepoint"));
    }

    #[test]
    fn the_destruction_probe_attaches_first_and_only_where_used() {
        let info = |tier, destruction| HookInfo {
            tier,
            chosen: HookChoice::Auto,
            fallback: None,
            destruction,
            destruction_fallback: None,
        };
        let names = |info: HookInfo| info.programs().iter().map(|s| s.program).collect::<Vec<_>>();
        let queued = names(info(Tier::Tracepoint, Destruction::QueuedWork));
        assert_eq!(queued[0], "netns_exit_queued");
        assert_eq!(queued[1..], TRACEPOINTS.iter().map(|s| s.program).collect::<Vec<_>>()[..]);
        assert!(!names(info(Tier::Tracepoint, Destruction::NetnsId)).contains(&"netns_exit_queued"));
        assert!(!names(info(Tier::Fentry, Destruction::NetdevExit)).contains(&"netns_exit_queued"));
        assert!(info(Tier::Tracepoint, Destruction::QueuedWork).reports_destruction());
        assert!(!info(Tier::Tracepoint, Destruction::NetnsId).reports_destruction());
    }

    #[test]
    fn entries_attach_after_their_exits() {
        for tier in [Tier::Fentry, Tier::Tracepoint] {
            let programs = tier.programs();
            let position = |name: &str| programs.iter().position(|s| s.program == name);
            let fork = position("sched_process_fork").expect("both tiers use the fork hook");
            for (index, spec) in programs.iter().enumerate() {
                let entry = spec.program.starts_with("sys_enter_")
                    || (spec.program.starts_with("fentry_") && spec.program != "fentry_netdev_exit");
                if entry {
                    assert!(index > fork, "{} attaches after the fork hook", spec.program);
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn syscall_functions_are_the_x86_64_wrappers() {
        assert_eq!(Function::Syscall("setns").name().as_deref(), Some("__x64_sys_setns"));
        assert_eq!(Function::Kernel("netdev_exit").name().as_deref(), Some("netdev_exit"));
    }
}
