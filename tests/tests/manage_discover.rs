//! Discovery: a namespace held only by a process (`unshare -n`) shows up in `list` as process-held, with its
//! NSID, interfaces and container hint as the kernel and cgroups say; `attach` makes it visible to
//! `ip netns list`; `attach --all` names every unnamed one, after its container when it is in one.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use netns_monitor_tests::{
    inode,
    netns::{NetnsGuard, ip_netns_list, ok, sh_ok, wait_until},
    require_root, unique_name,
};
use serde_json::Value;

/// A process in a fresh network namespace of its own (`unshare -n sleep`); killed on drop.
struct Holder {
    child: Child,
    inode: u32,
}

impl Holder {
    fn spawn() -> Self {
        let own = inode("/proc/self/ns/net");
        let child = Command::new("unshare").args(["--net", "sleep", "120"]).spawn().expect("spawn unshare");
        let link = format!("/proc/{}/ns/net", child.id());
        // unshare execs sleep in place once the namespace exists.
        wait_until(Duration::from_secs(10), "unshare to create its namespace", || {
            std::fs::metadata(&link).is_ok() && inode(&link) != own
        });
        let inode = inode(&link);
        Holder { child, inode }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn list_entry(inode: u32) -> Value {
    let list: Value = serde_json::from_str(&ok(&["list", "--json"])).expect("list --json is JSON");
    list.as_array().expect("array").iter().find(|ns| ns["inode"] == inode).cloned().unwrap_or(Value::Null)
}

#[test]
fn process_held_namespace_is_listed_and_attach_names_it() {
    require_root();
    let holder = Holder::spawn();
    let entry = list_entry(holder.inode);
    assert_eq!(entry["source"], "process", "{entry:#}");
    assert!(entry["pids"].as_array().unwrap().contains(&holder.pid().into()), "{entry:#}");
    assert_eq!(entry["interfaces"], serde_json::json!(["lo"]));
    assert_eq!(entry["nsid"], Value::Null, "no NSID assigned yet");
    assert_eq!(entry["container"], Value::Null);

    let name = unique_name("nsm-att");
    let _guard = NetnsGuard::new(&name);
    ok(&["attach", &name, &holder.pid().to_string()]);
    assert!(ip_netns_list().contains(&name), "ip netns list sees the attached name");
    assert_eq!(sh_ok("ip", &["netns", "identify", &holder.pid().to_string()]).trim(), name);
    assert_eq!(inode(Path::new("/run/netns").join(&name)), holder.inode, "the name is the process's namespace");

    // NSID as seen from here: assign one with iproute2, read it back from ours.
    sh_ok("ip", &["netns", "set", &name, "auto"]);
    let listed = sh_ok("ip", &["netns", "list"]);
    let nsid: i64 = listed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .and_then(|l| l.split("(id: ").nth(1))
        .and_then(|id| id.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("ip netns list shows an id for {name}: {listed}"));
    let entry = list_entry(holder.inode);
    assert_eq!(entry["nsid"], nsid, "NSID matches ip netns list: {entry:#}");
    assert_eq!(entry["source"], "named");
    assert!(entry["names"].as_array().unwrap().contains(&name.as_str().into()));
}

/// A cgroup v1 directory (the layout Docker's cgroupfs driver makes) holding one process; on drop the
/// process goes back to the root cgroup and the directory is removed.
struct FakeContainerCgroup(PathBuf, u32);

impl FakeContainerCgroup {
    fn docker(id: &str, pid: u32) -> Self {
        let dir = Path::new("/sys/fs/cgroup/pids/docker").join(id);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("move the process into the cgroup");
        FakeContainerCgroup(dir, pid)
    }
}

impl Drop for FakeContainerCgroup {
    fn drop(&mut self) {
        // A cgroup can only be removed once empty.
        let _ = std::fs::write("/sys/fs/cgroup/pids/cgroup.procs", self.1.to_string());
        if let Err(err) = std::fs::remove_dir(&self.0) {
            eprintln!("cannot remove {}: {err}", self.0.display());
        }
        // The parent `docker` directory may be shared with a concurrent run; it goes when empty.
        let _ = std::fs::remove_dir(self.0.parent().expect("parent"));
    }
}

#[test]
fn attach_all_names_container_and_process_namespaces() {
    require_root();
    let plain = Holder::spawn();
    let contained = Holder::spawn();
    let id = format!("{:0>64x}", u128::from(std::process::id()) << 64 | 0xfeed_beef_u128);
    let _cgroup = FakeContainerCgroup::docker(&id, contained.pid());
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", contained.pid())).unwrap();
    assert!(cgroup.contains(&format!("/docker/{id}")), "oracle: the process is in the container cgroup: {cgroup}");

    let entry = list_entry(contained.inode);
    assert_eq!(entry["container"], serde_json::json!({"runtime": "docker", "id": id}), "{entry:#}");

    let out = ok(&["attach", "--all"]);
    // Every name it made (other tests' namespaces too) is removed again.
    let made: Vec<(String, String)> =
        out.lines().filter_map(|l| l.split_once('\t')).map(|(name, ns)| (name.to_owned(), ns.to_owned())).collect();
    let _guards: Vec<NetnsGuard> = made.iter().map(|(name, _)| NetnsGuard::new(name)).collect();
    let name_of = |inode: u32| made.iter().find(|(_, ns)| *ns == format!("net:[{inode}]")).map(|(n, _)| n.clone());

    let docker_name = name_of(contained.inode).unwrap_or_else(|| panic!("container namespace named: {out}"));
    assert_eq!(docker_name, format!("docker-{}", &id[..12]), "named after the container");
    let plain_name = name_of(plain.inode).unwrap_or_else(|| panic!("process namespace named: {out}"));
    assert_eq!(plain_name, format!("pid-{}", plain.pid()));
    let listed = ip_netns_list();
    assert!(listed.contains(&docker_name) && listed.contains(&plain_name), "ip netns list: {listed:?}");
    assert_eq!(sh_ok("ip", &["netns", "identify", &contained.pid().to_string()]).trim(), docker_name);
    let own = format!("net:[{}]", inode("/proc/self/ns/net"));
    assert!(!made.iter().any(|(_, ns)| *ns == own), "the host namespace is not named");

    // Named ones are skipped on a second run.
    let again = ok(&["attach", "--all"]);
    let again_made: Vec<&str> = again.lines().filter_map(|l| l.split('\t').next()).collect();
    let _more: Vec<NetnsGuard> = again_made.iter().map(|name| NetnsGuard::new(*name)).collect();
    assert!(!again.contains(&format!("net:[{}]", contained.inode)), "already named: {again}");
    assert!(!again.contains(&format!("net:[{}]", plain.inode)), "already named: {again}");
}
