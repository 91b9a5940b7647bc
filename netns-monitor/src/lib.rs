//! netns-monitor: manage, discover, trace and count Linux network namespaces.
//!
//! A map of the modules, in the order data flows through them:
//! - [`bpf`]: mount tracefs/bpffs, compute struct offsets from BTF, load and attach the embedded programs.
//! - [`trace`]: decode transition events and stream them out of the ring buffer.
//! - [`traffic`]: attach the tc/TCX classifiers to every veth, pin them, read the per-interface counters.
//! - [`agent`]: `netns-monitor run`, the long-running agent; takes its shutdown signal as a parameter.
//! - [`inventory`]: discover every network namespace (named, bind-mounted, process- or fd-held).
//! - [`lifecycle`]: follow namespaces to their destruction (netns ids and `RTM_DELNSID`).
//! - [`metrics`]: the `/metrics` HTTP(S) endpoint and its exporter-toolkit web config (TLS, basic auth).
//! - [`manage`]: add/del/exec/attach named namespaces, veth pairs, NAT and port forwards (netlink + syscalls).
//! - [`privileges`]: the agent's least privilege: check, then drop, capabilities.
//! - [`textfile`]: read operator-named files with a size bound.
//! - [`mountinfo`]: parse `/proc/PID/mountinfo` (used to find tracefs/bpffs and nsfs bind mounts).
//! - [`route_socket`]: a blocking rtnetlink socket for asking many namespaces in a row.
//! - [`cli`]: the command line (clap) and its dispatch; the only place that turns errors into exit codes.

pub mod agent;
pub mod bpf;
pub mod cli;
pub mod inventory;
pub mod lifecycle;
pub mod manage;
pub mod metrics;
pub mod mountinfo;
pub mod privileges;
pub mod route_socket;
pub mod textfile;
pub mod trace;
pub mod traffic;
