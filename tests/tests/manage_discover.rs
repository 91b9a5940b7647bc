//! Discovery: a namespace held only by a process (`unshare -n`) shows up in `list` as process-held, with its
//! NSID and interfaces as the kernel says; `attach` makes it visible to `ip netns list`; `attach --all` names
//! every unnamed one with a symlink that never keeps it alive (`tests/containers.rs` does real containers).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use netns_monitor_tests::{
    inode,
    netns::{AttachAllGuard, NetnsGuard, ip_netns_list, ok, sh_ok, wait_until},
    require_root, unique_name,
};
use serde_json::Value;

/// Taken by both tests: `attach --all` names every unnamed process-held namespace on the machine, the other
/// test's holder too, and `ip netns identify` then prints its `pid-N` name instead of the one the test gave.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
    let _turn = one_at_a_time();
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

#[test]
fn attach_all_names_with_symlinks_that_never_pin_and_prunes_its_own() {
    require_root();
    let _turn = one_at_a_time();
    let plain = Holder::spawn();
    let person = Holder::spawn();
    let person_name = unique_name("nsm-person");
    let _person_guard = NetnsGuard::new(&person_name);
    let guard = AttachAllGuard { pids: vec![plain.pid(), person.pid()] };
    ok(&["attach", &person_name, &person.pid().to_string()]);

    let out = ok(&["attach", "--all"]);
    // It names every unnamed namespace on the machine, other tests' too: each name it printed goes at the end.
    let _printed: Vec<NetnsGuard> =
        out.lines().filter_map(|line| line.split_once('\t')).map(|(name, _)| NetnsGuard::new(name)).collect();
    let expected = format!("pid-{}", plain.pid());
    assert!(out.lines().any(|l| l == format!("{expected}\tnet:[{}]", plain.inode)), "named after its process: {out}");
    assert!(!out.contains(&format!("net:[{}]", person.inode)), "a namespace a person named is left alone: {out}");
    assert_eq!(guard.names(), std::slice::from_ref(&expected), "one name, for the unnamed namespace only");
    let own = format!("net:[{}]", inode("/proc/self/ns/net"));
    assert!(!out.contains(&own), "the host namespace is not named: {out}");

    // iproute2 sees it and enters it; it is a symlink, no mount, so it holds nothing.
    let path = Path::new("/run/netns").join(&expected);
    assert_eq!(std::fs::read_link(&path).unwrap(), PathBuf::from(format!("/proc/{}/ns/net", plain.pid())));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&format!(" {} ", path.display())), "not a mount point");
    assert!(ip_netns_list().contains(&expected), "ip netns list sees it");
    assert_eq!(sh_ok("ip", &["netns", "identify", &plain.pid().to_string()]).trim(), expected);
    let inside = sh_ok("ip", &["netns", "exec", &expected, "readlink", "/proc/self/ns/net"]);
    assert_eq!(inside.trim(), format!("net:[{}]", plain.inode));
    assert_eq!(list_entry(plain.inode)["names"], serde_json::json!([expected]));

    // A second run changes nothing.
    let again = ok(&["attach", "--all"]);
    assert!(!again.contains(&format!("net:[{}]", plain.inode)), "already named: {again}");

    // The process goes: the name stops resolving (instead of keeping a dead namespace), and --prune takes
    // back ours only.
    let plain_pid = plain.pid();
    drop(plain);
    let exec = netns_monitor_tests::netns::sh("ip", &["netns", "exec", &expected, "true"]);
    assert!(!exec.status.success(), "ip netns exec fails once the process is gone");
    let pruned = ok(&["attach", "--all", "--prune"]);
    assert!(pruned.lines().any(|l| l == format!("removed {expected}")), "{pruned}");
    assert!(std::fs::symlink_metadata(&path).is_err(), "our name is gone");
    assert!(ip_netns_list().contains(&person_name), "a person's name is never pruned");
    assert_eq!(sh_ok("ip", &["netns", "identify", &person.pid().to_string()]).trim(), person_name);
    assert!(!ok(&["attach", "--all", "--prune"]).contains(&format!("pid-{plain_pid}")), "nothing left to prune for it");

    // A person who replaces one of our names by a symlink of their own (`ln -sf`, same target) owns it from
    // then on: --prune leaves it when the process goes.
    let other = Holder::spawn();
    let _other_guard = AttachAllGuard { pids: vec![other.pid()] };
    let out = ok(&["attach", "--all"]);
    let taken = format!("pid-{}", other.pid());
    let _taken_guard = NetnsGuard::new(&taken);
    assert!(out.lines().any(|l| l.starts_with(&format!("{taken}\t"))), "{out}");
    let link = Path::new("/run/netns").join(&taken);
    let target = std::fs::read_link(&link).unwrap();
    let replacement = Path::new("/run/netns").join(format!(".{taken}.person"));
    std::os::unix::fs::symlink(&target, &replacement).unwrap();
    std::fs::rename(&replacement, &link).unwrap();
    drop(other);
    let pruned = ok(&["attach", "--all", "--prune"]);
    assert!(!pruned.contains(&taken), "a symlink a person put in place of ours is not pruned: {pruned}");
    assert!(link.symlink_metadata().is_ok(), "{} is still there", link.display());
}

/// Removes every namespace in `names` on drop, with one `ip -batch` (made before they are created).
struct ManyNamespaces {
    names: Vec<String>,
}

impl Drop for ManyNamespaces {
    fn drop(&mut self) {
        let script: String = self
            .names
            .iter()
            .filter(|name| Path::new("/run/netns").join(name).exists())
            .map(|name| format!("netns del {name}\n"))
            .collect();
        ip_batch(&script);
    }
}

fn ip_batch(script: &str) {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ip -batch");
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write the batch");
    let status = child.wait().expect("wait for ip -batch");
    assert!(status.success(), "ip -batch failed ({status})");
}

/// `list` asks many namespaces on several threads, each entering one namespace after another: every
/// namespace's NSID and interfaces still come out as the kernel shows them (`ip netns list`, `ip -n NAME link`),
/// whichever thread read it and whatever namespace that thread was in before.
#[test]
fn list_reads_many_namespaces_as_the_kernel_shows_them() {
    require_root();
    let _turn = one_at_a_time();
    let prefix = unique_name("nsm-many");
    let fixture = ManyNamespaces { names: (0..150).map(|i| format!("{prefix}-{i}")).collect() };
    // Three shapes, mixed: lo only; a veth pair to the host (the host gets an NSID for it); a veth pair
    // with both ends inside (no NSID needed).
    let tag = std::process::id() % 100_000;
    let mut script = String::new();
    for (i, name) in fixture.names.iter().enumerate() {
        script.push_str(&format!("netns add {name}\n"));
        match i % 3 {
            1 => script.push_str(&format!("link add nmh{tag}x{i} type veth peer name inner{i} netns {name}\n")),
            2 => script.push_str(&format!("link add a{i} netns {name} type veth peer name b{i} netns {name}\n")),
            _ => {}
        }
    }
    ip_batch(&script);

    let list: Value = serde_json::from_str(&ok(&["list", "--json"])).expect("list --json is JSON");
    let rows = list.as_array().expect("array");
    let ids: std::collections::HashMap<String, i64> = sh_ok("ip", &["netns", "list"])
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(' ')?;
            Some((name.to_owned(), rest.strip_prefix("(id: ")?.strip_suffix(')')?.parse().ok()?))
        })
        .collect();
    for (i, name) in fixture.names.iter().enumerate() {
        let row = rows
            .iter()
            .find(|row| row["names"].as_array().is_some_and(|n| n.iter().any(|n| n == name.as_str())))
            .unwrap_or_else(|| panic!("{name} is not listed"));
        assert_eq!(row["inode"], inode(Path::new("/run/netns").join(name)), "{row:#}");
        let kernel: Vec<String> = sh_ok("ip", &["-o", "-n", name, "link", "show"])
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .collect();
        assert_eq!(row["interfaces"], serde_json::json!(kernel), "interfaces of {name} ({i} % 3 = {})", i % 3);
        assert_eq!(row["nsid"], ids.get(name).map_or(Value::Null, |&id| id.into()), "NSID of {name}: {row:#}");
        if i % 3 == 1 {
            assert!(ids.contains_key(name), "the host end's peer gave {name} an NSID");
        }
    }
    // The caller's own namespace is in the list too, with its own interfaces and no NSID.
    let own = inode("/proc/self/ns/net");
    let host = rows.iter().find(|row| row["inode"] == own).expect("own namespace listed");
    assert_eq!(host["nsid"], Value::Null);
    assert_eq!(host["interfaces"][0], "lo");
    let host_ends = host["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n.as_str().is_some_and(|n| n.starts_with(&format!("nmh{tag}x"))));
    assert_eq!(host_ends.count(), 50, "every host end of a pair is in the host's interfaces");
}

/// A namespace held only by an open file descriptor (here this test's own, after the thread that made it is
/// gone) is a namespace too: `list` shows it by default, as `fd` with its holder, and only `--no-fds` skips the
/// walk that finds it.
#[test]
fn fd_held_namespace_is_listed_by_default() {
    require_root();
    let _turn = one_at_a_time();
    let held = std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        std::fs::File::open("/proc/thread-self/ns/net").expect("open own netns")
    })
    .join()
    .unwrap();
    let held_inode = inode(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&held)));
    let entry = list_entry(held_inode);
    assert_eq!(entry["source"], "fd", "{entry:#}");
    assert!(entry["fd_holders"].as_array().unwrap().contains(&std::process::id().into()), "{entry:#}");
    let table = ok(&["list"]);
    assert!(table.lines().any(|l| l.starts_with(&held_inode.to_string())), "the table shows it too:\n{table}");
    let skipped: Value = serde_json::from_str(&ok(&["list", "--json", "--no-fds"])).unwrap();
    assert!(!skipped.as_array().unwrap().iter().any(|ns| ns["inode"] == held_inode), "--no-fds skips the walk");
    drop(held);
}

/// `list -o` with lsns's column names gives what `lsns -t net` gives for a namespace both can see: one held by
/// a process of another user.
#[test]
fn lsns_columns_agree_with_lsns() {
    require_root();
    let holder = Command::new("unshare")
        .args(["-n", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "60"])
        .spawn()
        .expect("spawn");
    let holder = netns_monitor_tests::netns::ChildGuard(holder);
    let pid = holder.0.id();
    wait_until(Duration::from_secs(10), "setpriv to become sleep", || {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.ends_with("sleep"))
    });
    let netns = inode(format!("/proc/{pid}/ns/net"));
    let lsns: Value = serde_json::from_str(&sh_ok(
        "lsns",
        &["-t", "net", "-J", "-o", "NS,NPROCS,PID,PPID,COMMAND,UID,USER,NETNSID,NSFS"],
    ))
    .expect("lsns -J");
    let theirs =
        lsns["namespaces"].as_array().unwrap().iter().find(|n| n["ns"] == netns).expect("lsns sees it").clone();
    let columns = "NS,TYPE,NPROCS,PID,PPID,UID,USER,NETNSID,NSFS,PATH";
    let table = ok(&["list", "-o", columns, "-n"]);
    let line = table.lines().find(|l| l.starts_with(&format!("{netns} "))).unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    let expected = [
        netns.to_string(),
        "net".into(),
        theirs["nprocs"].to_string(),
        theirs["pid"].to_string(),
        theirs["ppid"].to_string(),
        theirs["uid"].to_string(),
        theirs["user"].as_str().unwrap().into(),
        theirs["netnsid"].as_str().unwrap().into(),
        "-".into(),
        format!("/proc/{pid}/ns/net"),
    ];
    assert_eq!(cells, expected, "ours: {line}\nlsns: {theirs}");
    assert_eq!(theirs["uid"], 65534, "another user's process");
    let json: Value = serde_json::from_str(&ok(&["list", "--json"])).unwrap();
    let ours = json.as_array().unwrap().iter().find(|r| r["inode"] == netns).expect("in --json");
    for (field, lsns_field) in
        [("pid", "pid"), ("ppid", "ppid"), ("command", "command"), ("uid", "uid"), ("user", "user")]
    {
        assert_eq!(ours[field], theirs[lsns_field], "--json keeps {field}");
    }
    assert!(ok(&["list", "--output-all", "-n"]).lines().count() >= 2, "--output-all prints rows");
    let out = netns_monitor_tests::netns::run(&["list", "-o", "NS,NOPE"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown column \"NOPE\""));
}
