//! systemd-nspawn (systemd 252) without systemd as PID 1: `--register=no --keep-unit` (no machined, no unit of
//! its own), `--network-veth` (`ve-MACHINE` on the host, `host0` inside, both addressed by hand: no networkd
//! here), the busybox tree read-only, a long sleep as the container's PID 1, run in the background. The
//! container's init is nspawn's child, found in the process tree.
//!
//! With `--keep-unit` nspawn splits the cgroup it runs in into `payload` and `supervisor`; each nspawn runs in
//! a cgroup of its own (`MACHINE.nspawn`, v2 and `name=systemd`) so that those land there and go with it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{Container, Inspected, Runtime, STEP, cgroups, command, docker::stop_child, net, output, scope, wait_for};

/// nspawn's runtime directory (machine locks, mount propagation), made on first use.
const RUN_DIR: &str = "/run/systemd/nspawn";

/// systemd-nspawn machines; dropping it stops them and removes their cgroups.
pub struct Nspawn {
    dir: PathBuf,
    machines: Mutex<HashMap<String, Child>>,
    made_run_dir: bool,
}

impl Nspawn {
    /// nspawn for this test process.
    pub fn shared() -> Arc<Nspawn> {
        static SLOT: Mutex<Option<Arc<Nspawn>>> = Mutex::new(None);
        scope::shared(&SLOT, Nspawn::start)
    }

    pub fn start() -> Nspawn {
        let _ = super::rootfs::rootfs();
        let dir = scope::run_dir().join("nspawn");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let made_run_dir = !Path::new(RUN_DIR).exists();
        if made_run_dir {
            scope::note_made(Path::new(RUN_DIR));
        }
        Nspawn { dir, machines: Mutex::new(HashMap::new()), made_run_dir }
    }

    fn cgroup(machine: &str) -> String {
        format!("{machine}.nspawn")
    }

    /// Starts machine `name` in the background and returns its init's pid once it runs in its own namespaces.
    fn spawn(&self, name: &str) -> u32 {
        let procs = cgroups::create_systemd(&Self::cgroup(name));
        let enter: String = procs.iter().map(|p| format!("echo $$ > {} && ", p.display())).collect();
        let rootfs = super::rootfs::rootfs().dir.display().to_string();
        let script = format!(
            "{enter}exec systemd-nspawn --quiet --register=no --keep-unit --network-veth --read-only \
             --timezone=off --resolv-conf=off --link-journal=no --kill-signal=SIGKILL --console=pipe \
             -D {rootfs} -M {name} /bin/sleep 1000000"
        );
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("create the nspawn log");
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start systemd-nspawn");
        let nspawn = child.id();
        let own_pidns = crate::inode("/proc/self/ns/pid");
        let found = wait_for(STEP, &format!("systemd-nspawn -M {name} to start its container"), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(Err(status));
            }
            // The container's PID 1 runs in a new pid namespace; it is ready once it has exec'd the sleep and
            // nspawn has moved `host0` into its network namespace (nspawn does that after the fork).
            super::children_of(nspawn)
                .into_iter()
                .find(|&pid| {
                    std::fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok()
                        && crate::inode(format!("/proc/{pid}/ns/pid")) != own_pidns
                        && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
                        && output(&mut net::nsenter(pid, &["ip", "link", "show", "dev", "host0"])).status.success()
                })
                .map(Ok)
                .ok_or_else(|| std::fs::read_to_string(&log_path).unwrap_or_default())
        });
        match found {
            Ok(pid) => {
                self.machines.lock().unwrap().insert(name.to_owned(), child);
                pid
            }
            Err(status) => panic!(
                "systemd-nspawn -M {name} exited ({status}): {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        }
    }

    fn describe(&self, name: &str, pid: u32, net: &str) -> Container {
        let host_if = net::host_peer(pid, "host0");
        let gateway = net::configure(pid, &host_if, "host0", net);
        Container {
            runtime: "systemd-nspawn",
            id: name.to_owned(),
            name: name.to_owned(),
            pid,
            inner_if: "host0".to_owned(),
            host_if,
            gateway,
        }
    }

    fn stop(&self, name: &str) {
        if let Some(mut child) = self.machines.lock().unwrap().remove(name) {
            stop_child(&mut child, Duration::from_secs(20));
        }
        cgroups::remove(&Self::cgroup(name));
        let _ = std::fs::remove_dir_all(format!("{RUN_DIR}/propagate/{name}"));
    }
}

impl Runtime for Nspawn {
    fn kind(&self) -> &'static str {
        "systemd-nspawn"
    }

    fn start(&self, name: &str) -> Container {
        let pid = self.spawn(name);
        self.describe(name, pid, &net::next_subnet())
    }

    fn restart(&self, container: &Container) -> Container {
        self.stop(&container.name);
        let pid = self.spawn(&container.name);
        self.describe(&container.name, pid, container.gateway.strip_suffix(".1").expect("gateway NET.1"))
    }

    fn remove(&self, container: &Container) {
        self.stop(&container.name);
    }

    fn inspect(&self, container: &Container) -> Option<Inspected> {
        let mut machines = self.machines.lock().unwrap();
        let child = machines.get_mut(&container.name)?;
        if !matches!(child.try_wait(), Ok(None)) {
            return None;
        }
        let pid = super::children_of(child.id()).into_iter().find(|&pid| super::alive(pid))?;
        Some(Inspected { id: container.name.clone(), name: container.name.clone(), pid })
    }

    fn exec(&self, container: &Container, args: &[&str]) -> Output {
        output(command("nsenter", &["-t", &container.pid.to_string(), "-a"]).args(args))
    }

    fn exec_description(&self, container: &Container, args: &[&str]) -> String {
        format!("nsenter -t {} -a {}", container.pid, args.join(" "))
    }
}

impl Drop for Nspawn {
    fn drop(&mut self) {
        let names: Vec<String> = self.machines.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        for name in names {
            self.stop(&name);
        }
        if self.made_run_dir {
            let _ = std::fs::remove_dir_all(RUN_DIR);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
