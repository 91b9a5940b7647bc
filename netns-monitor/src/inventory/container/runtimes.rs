//! What the runtimes themselves record, read from their state on disk: bare runc's containers (by init
//! process) and the names Docker gives its containers.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use super::process::start_time;

/// Where runc keeps its containers' state when run by root with the default `--root`.
pub const RUNC_ROOT: &str = "/run/runc";
/// Docker's default data root.
const DOCKER_DATA_ROOT: &str = "/var/lib/docker";
const DOCKER_CONFIG: &str = "/etc/docker/daemon.json";

/// runc containers by the pid of their init process.
#[derive(Debug, Default)]
pub struct RuncStates {
    by_init: HashMap<u32, String>,
}

impl RuncStates {
    /// Reads `ROOT/ID/state.json` of every container under `root`.
    pub fn read(root: &Path) -> Self {
        let mut by_init = HashMap::new();
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let Ok(id) = entry.file_name().into_string() else { continue };
            let Ok(text) = std::fs::read(entry.path().join("state.json")) else { continue };
            let Ok(state) = serde_json::from_slice::<RuncState>(&text) else { continue };
            // A stopped container keeps its state file; its pid may belong to someone else by now.
            if start_time(state.init_process_pid) == Some(state.init_process_start) {
                by_init.insert(state.init_process_pid, id);
            }
        }
        Self { by_init }
    }

    /// The id of the runc container whose init is `pid`.
    pub fn container_of(&self, pid: u32) -> Option<&str> {
        self.by_init.get(&pid).map(String::as_str)
    }
}

#[derive(serde::Deserialize)]
struct RuncState {
    init_process_pid: u32,
    init_process_start: u64,
}

/// The data roots of every running dockerd, seen through its own root directory (so a dockerd in another mount
/// namespace counts too).
pub fn docker_data_roots(pids: &[u32]) -> Vec<PathBuf> {
    pids.iter()
        .filter(|&&pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "dockerd"))
        .filter_map(|&pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = raw.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            let root = Path::new(&format!("/proc/{pid}/root")).to_owned();
            let data_root =
                data_root_of(&args, |path| std::fs::read(root.join(path.strip_prefix("/").unwrap_or(path))).ok());
            Some(root.join(data_root.strip_prefix("/").unwrap_or(&data_root)))
        })
        .collect()
}

/// A dockerd's data root: `--data-root` (or the older `-g`/`--graph`), else its config file's `data-root`,
/// else `/var/lib/docker`. `read` reads a file as dockerd sees it.
pub fn data_root_of(args: &[String], read: impl Fn(&Path) -> Option<Vec<u8>>) -> PathBuf {
    let value = |names: &[&str]| super::process::option(args, names);
    if let Some(root) = value(&["--data-root", "-g", "--graph"]) {
        return root.into();
    }
    let config = value(&["--config-file"]).unwrap_or_else(|| DOCKER_CONFIG.to_owned());
    read(Path::new(&config))
        .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
        .and_then(|config| config.get("data-root")?.as_str().map(PathBuf::from))
        .unwrap_or_else(|| DOCKER_DATA_ROOT.into())
}

/// The name `docker ps` shows for container `id`, from `DATA_ROOT/containers/ID/config.v2.json`.
pub fn docker_name(data_roots: &[PathBuf], id: &str) -> Option<String> {
    data_roots.iter().find_map(|root| {
        let text = std::fs::read(root.join("containers").join(id).join("config.v2.json")).ok()?;
        let config: serde_json::Value = serde_json::from_slice(&text).ok()?;
        Some(config.get("Name")?.as_str()?.trim_start_matches('/').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn docker_data_root_follows_dockerd() {
        let none = |_: &Path| None;
        assert_eq!(data_root_of(&args("dockerd --data-root /srv/d -H unix:///x"), none), PathBuf::from("/srv/d"));
        assert_eq!(data_root_of(&args("dockerd --data-root=/srv/e"), none), PathBuf::from("/srv/e"));
        assert_eq!(data_root_of(&args("dockerd -g /old"), none), PathBuf::from("/old"));
        assert_eq!(data_root_of(&args("dockerd"), none), PathBuf::from("/var/lib/docker"));
        let config = |path: &Path| (path == Path::new("/etc/d.json")).then(|| br#"{"data-root": "/cfg"}"#.to_vec());
        assert_eq!(data_root_of(&args("dockerd --config-file /etc/d.json"), config), PathBuf::from("/cfg"));
    }

    #[test]
    fn docker_names_come_from_the_container_config() {
        let dir = std::env::temp_dir().join(format!("nm-docker-{}", std::process::id()));
        let config = dir.join("containers/abc");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("config.v2.json"), br#"{"ID":"abc","Name":"/web1"}"#).unwrap();
        assert_eq!(docker_name(std::slice::from_ref(&dir), "abc"), Some("web1".to_owned()));
        assert_eq!(docker_name(std::slice::from_ref(&dir), "other"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runc_states_keep_only_live_inits() {
        let dir = std::env::temp_dir().join(format!("nm-runc-{}", std::process::id()));
        let me = std::process::id();
        for (id, start) in [("live", start_time(me).unwrap()), ("reused", 1)] {
            std::fs::create_dir_all(dir.join(id)).unwrap();
            let state = format!(r#"{{"id":"{id}","init_process_pid":{me},"init_process_start":{start}}}"#);
            std::fs::write(dir.join(id).join("state.json"), state).unwrap();
        }
        let states = RuncStates::read(&dir);
        assert_eq!(states.container_of(me), Some("live"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
