//! Bare runc 1.1: an OCI bundle per container (`runc spec`, then the busybox tree read-only as its root, a
//! long sleep as its process, `CAP_NET_RAW` for ping), `runc run -d` with runc's default state root
//! (`/run/runc`, where anything looking for runc's containers looks; the ids are ours, so nothing else there
//! is touched), and a veth added by hand into the container's namespace. Nothing supervises a detached runc
//! container: its init is a child of PID 1, known only from runc's state.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex},
};

use serde_json::Value;

use super::{Container, Inspected, Runtime, STEP, command, net, ok, output, quiet, scope, wait_for};

/// runc's state root for root (its default).
pub const ROOT: &str = "/run/runc";

/// Bare runc; dropping it kills and deletes the containers it made and their bundles.
pub struct Runc {
    dir: PathBuf,
}

impl Runc {
    /// runc for this test process.
    pub fn shared() -> Arc<Runc> {
        static SLOT: Mutex<Option<Arc<Runc>>> = Mutex::new(None);
        scope::shared(&SLOT, Runc::start)
    }

    pub fn start() -> Runc {
        let _ = super::rootfs::rootfs();
        let dir = scope::run_dir().join("runc");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Runc { dir }
    }

    /// `runc --root ROOT ARGS...`.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("runc");
        cmd.args(["--root", ROOT]).args(args);
        cmd
    }

    /// `runc state ID` as JSON, if runc knows the container.
    pub fn state(&self, id: &str) -> Option<Value> {
        let out = output(&mut self.cli(&["state", id]));
        out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("runc state prints JSON"))
    }

    fn bundle(&self, id: &str) -> PathBuf {
        let bundle = self.dir.join(id);
        std::fs::create_dir_all(&bundle).unwrap_or_else(|e| panic!("mkdir {}: {e}", bundle.display()));
        if !bundle.join("config.json").exists() {
            ok(self.cli(&["spec", "--bundle"]).arg(&bundle));
            let path = bundle.join("config.json");
            let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).expect("read config.json")).unwrap();
            spec["root"] = serde_json::json!({"path": super::rootfs::rootfs().dir, "readonly": true});
            spec["hostname"] = id.into();
            spec["process"]["terminal"] = false.into();
            spec["process"]["args"] = serde_json::json!(["sleep", "1000000"]);
            for set in spec["process"]["capabilities"].as_object_mut().expect("capabilities").values_mut() {
                set.as_array_mut().expect("a capability set").push("CAP_NET_RAW".into());
            }
            std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).expect("write config.json");
        }
        bundle
    }

    /// `runc run -d`, then the veth `host` with subnet `net`.
    fn run(&self, id: &str, host: &str, net: &str) -> Container {
        let bundle = self.bundle(id);
        // The container keeps runc's stdio: a file, not a pipe that would never reach end-of-file.
        let log = bundle.join("runc.log");
        let file = std::fs::File::create(&log).expect("create runc.log");
        let status = self
            .cli(&["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .status()
            .expect("run runc");
        assert!(
            status.success(),
            "runc run -d {id} failed ({status}): {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let pid = self.inspect_id(id).unwrap_or_else(|| panic!("runc state {id}: not running")).pid;
        let gateway = net::add_veth(pid, host, "eth0", net);
        Container {
            runtime: "runc",
            id: id.to_owned(),
            name: id.to_owned(),
            pid,
            inner_if: "eth0".to_owned(),
            host_if: host.to_owned(),
            gateway,
        }
    }

    fn inspect_id(&self, id: &str) -> Option<Inspected> {
        let state = self.state(id)?;
        let pid = state["pid"].as_u64().filter(|&p| p > 0)? as u32;
        (state["status"] == "running").then(|| Inspected { id: id.to_owned(), name: id.to_owned(), pid })
    }

    fn kill(&self, id: &str) {
        quiet(&mut self.cli(&["kill", id, "KILL"]));
        wait_for(STEP, &format!("runc container {id} to stop"), || match self.state(id) {
            Some(state) if state["status"] == "running" => Err(state.to_string()),
            _ => Ok(()),
        });
        quiet(&mut self.cli(&["delete", "-f", id]));
    }
}

impl Runtime for Runc {
    fn kind(&self) -> &'static str {
        "runc"
    }

    fn start(&self, name: &str) -> Container {
        self.run(name, &crate::unique_name(super::PREFIX), &net::next_subnet())
    }

    fn restart(&self, container: &Container) -> Container {
        self.kill(&container.id);
        let net = container.gateway.strip_suffix(".1").expect("gateway NET.1");
        self.run(&container.id, &container.host_if, net)
    }

    fn remove(&self, container: &Container) {
        self.kill(&container.id);
        quiet(&mut command("ip", &["link", "del", &container.host_if]));
        let _ = std::fs::remove_dir_all(self.dir.join(&container.id));
    }

    fn inspect(&self, container: &Container) -> Option<Inspected> {
        self.inspect_id(&container.id)
    }

    fn exec(&self, container: &Container, args: &[&str]) -> Output {
        output(self.cli(&["exec", &container.id]).args(args))
    }

    fn exec_description(&self, container: &Container, args: &[&str]) -> String {
        format!("runc exec {} {}", container.id, args.join(" "))
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if let Some(id) = entry.file_name().to_str() {
                self.kill(id);
            }
        }
        let _ = std::fs::remove_dir("/run/runc");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
