//! The scan's mountinfo cache (a parse is reused until the kernel reports a mount change): in one process,
//! scans before and after naming a namespace, bind-mounting it elsewhere, unmounting and deleting it each see
//! exactly the current state, and a name that is a symlink to /proc/PID/ns/net (no mount point) still counts.

use std::path::Path;

use netns_monitor::inventory::{Inventory, ScanOptions};
use netns_monitor_tests::{NamedNetns, monitoring::TempDir, require_root, run_ok};

fn scan() -> Inventory {
    Inventory::scan(&ScanOptions::default()).expect("scan")
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn scans_follow_mount_changes() {
    require_root();
    // Fills the cache with the current mount tables.
    scan();

    let ns = NamedNetns::new("nsm-ic");
    let inode = ns.inode();
    let named = scan();
    let found = named.get(inode).expect("a new named namespace is seen by the next scan");
    assert_eq!(found.names, std::slice::from_ref(&ns.name));
    assert!(found.bind_mounts.is_empty());

    let dir = TempDir::new("nsm-ic");
    let handle = dir.write("handle", "");
    run_ok(std::process::Command::new("mount").arg("--bind").arg(ns.path()).arg(&handle));
    let mounted = Mounted(&handle);
    let bound = scan();
    assert_eq!(bound.get(inode).expect("still there").bind_mounts, std::slice::from_ref(&handle));

    drop(mounted);
    let unbound = scan();
    assert!(unbound.get(inode).expect("still named").bind_mounts.is_empty(), "the unmount is seen");

    drop(ns);
    let deleted = scan();
    assert!(deleted.get(inode).is_none_or(|n| n.names.is_empty()), "the deleted name is gone");
}

#[test]
fn a_symlinked_name_is_found_without_a_mount() {
    require_root();
    scan();
    let name = netns_monitor_tests::unique_name("nsm-ls");
    let link = Path::new("/run/netns").join(&name);
    std::fs::create_dir_all("/run/netns").expect("/run/netns");
    std::os::unix::fs::symlink(format!("/proc/{}/ns/net", std::process::id()), &link).expect("symlink");
    let own = netns_monitor_tests::inode("/proc/self/ns/net");
    let seen = scan();
    let _ = std::fs::remove_file(&link);
    assert!(
        seen.get(own).expect("our namespace").names.contains(&name),
        "a /run/netns symlink to /proc/PID/ns/net names that namespace"
    );
}
