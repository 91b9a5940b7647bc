//! containerd 1.6 through `ctr`: the containerd the test's dockerd started ([`super::docker`]), in a containerd
//! namespace of the fixture's own, the busybox image imported from `docker save` (`ctr image import`), tasks
//! started with `ctr run -d` (a new network namespace each, no CNI) and a veth added by hand. Each task runs
//! under containerd's shim, `containerd-shim-runc-v2 -namespace NS -id ID`.

use std::{
    process::{Command, Output},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use super::{Container, Inspected, Runtime, STEP, command, docker::Docker, net, ok, output, quiet, scope, wait_for};

/// `ctr` on the test dockerd's containerd; dropping it deletes its tasks, containers and image.
pub struct Ctr {
    docker: Arc<Docker>,
    pub namespace: String,
    image: String,
}

impl Ctr {
    /// ctr for this test process (its namespace and image made on first use).
    pub fn shared() -> Arc<Ctr> {
        static SLOT: Mutex<Option<Arc<Ctr>>> = Mutex::new(None);
        scope::shared(&SLOT, Ctr::start)
    }

    /// Imports the busybox image into a fresh namespace of the shared dockerd's containerd.
    pub fn start() -> Ctr {
        let docker = Docker::shared();
        let image_tar = docker.saved_image().to_owned();
        let mut ctr = Ctr { docker, namespace: crate::unique_name(super::PREFIX), image: String::new() };
        ok(ctr.cli(&["image", "import"]).arg(&image_tar));
        let images = ok(&mut ctr.cli(&["image", "ls", "-q"]));
        ctr.image = images
            .lines()
            .find(|r| r.contains(super::docker::IMAGE))
            .unwrap_or_else(|| panic!("ctr image import made no {}: {images}", super::docker::IMAGE))
            .to_owned();
        ctr
    }

    /// `ctr --address SOCKET --namespace NS ARGS...`.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.docker.containerd_socket()).args(["--namespace", &self.namespace]).args(args);
        cmd
    }

    /// (pid, status) of task `id` from `ctr task ls`.
    fn task(&self, id: &str) -> Option<(u32, String)> {
        let out = output(&mut self.cli(&["task", "ls"]));
        String::from_utf8_lossy(&out.stdout).lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [task, pid, status] if task == id => Some((pid.parse().ok()?, status.to_owned())),
                _ => None,
            }
        })
    }

    fn wait_running(&self, id: &str, host: &str, net: &str) -> Container {
        let pid = wait_for(STEP, &format!("ctr task {id} to run"), || match self.task(id) {
            Some((pid, status)) if status == "RUNNING" && pid > 0 => Ok(pid),
            other => Err(format!("{other:?}")),
        });
        let gateway = net::add_veth(pid, host, "eth0", net);
        Container {
            runtime: "containerd",
            id: id.to_owned(),
            name: id.to_owned(),
            pid,
            inner_if: "eth0".to_owned(),
            host_if: host.to_owned(),
            gateway,
        }
    }

    fn stop_task(&self, id: &str) {
        quiet(&mut self.cli(&["task", "kill", "-s", "SIGKILL", id]));
        wait_for(STEP, &format!("ctr task {id} to stop"), || match self.task(id) {
            Some((_, status)) if status == "RUNNING" => Err(status),
            _ => Ok(()),
        });
        quiet(&mut self.cli(&["task", "delete", "-f", id]));
    }
}

impl Runtime for Ctr {
    fn kind(&self) -> &'static str {
        "containerd"
    }

    fn start(&self, name: &str) -> Container {
        ok(&mut self.cli(&["run", "-d", &self.image, name, "sleep", "1000000"]));
        self.wait_running(name, &crate::unique_name(super::PREFIX), &net::next_subnet())
    }

    fn restart(&self, container: &Container) -> Container {
        self.stop_task(&container.id);
        ok(&mut self.cli(&["task", "start", "-d", &container.id]));
        let net = container.gateway.strip_suffix(".1").expect("gateway NET.1");
        self.wait_running(&container.id, &container.host_if, net)
    }

    fn remove(&self, container: &Container) {
        self.stop_task(&container.id);
        quiet(&mut self.cli(&["container", "delete", &container.id]));
        quiet(&mut command("ip", &["link", "del", &container.host_if]));
    }

    fn inspect(&self, container: &Container) -> Option<Inspected> {
        match self.task(&container.id)? {
            (pid, status) if status == "RUNNING" => {
                Some(Inspected { id: container.id.clone(), name: container.id.clone(), pid })
            }
            _ => None,
        }
    }

    fn exec(&self, container: &Container, args: &[&str]) -> Output {
        static EXEC: AtomicU32 = AtomicU32::new(0);
        let exec_id = format!("exec{}", EXEC.fetch_add(1, Ordering::Relaxed));
        output(self.cli(&["task", "exec", "--exec-id", &exec_id, &container.id]).args(args))
    }

    fn exec_description(&self, container: &Container, args: &[&str]) -> String {
        format!("ctr task exec {} {}", container.id, args.join(" "))
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let ids = output(&mut self.cli(&["container", "ls", "-q"]));
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            self.stop_task(id);
            quiet(&mut self.cli(&["container", "delete", id]));
        }
        quiet(&mut self.cli(&["image", "rm", &self.image]));
        super::cgroups::remove(&self.namespace);
    }
}
