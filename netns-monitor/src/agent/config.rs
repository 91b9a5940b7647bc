//! The agent's configuration file (`netns-monitor run --config FILE`): the same settings as the command-line
//! flags, in YAML; a flag given on the command line wins over the file.
//!
//! ```yaml
//! listen: 127.0.0.1:10931
//! web_config: web-config.yml        # relative paths are relative to this file's directory
//! pin_dir: /sys/fs/bpf/netns-monitor
//! ring_buffer_bytes: 1048576
//! hooks: auto                       # or fentry (tier 1 or fail), tracepoint (tier 2)
//! max_interfaces: 16384             # veth ends counted at once (1 to 65535)
//! traffic_protocols: false          # count by transport protocol too (more series)
//! ```

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// Errors reading the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}")]
    Parse {
        path: String,
        #[source]
        source: serde_norway::Error,
    },
    #[error("{path}: ring_buffer_bytes must be a power of two >= 4096, not {value}")]
    RingBuffer { path: String, value: u32 },
    #[error("{path}: max_interfaces must be between 1 and {max}, not {value}", max = netns_monitor_common::traffic::MAX_SLOTS)]
    MaxInterfaces { path: String, value: u32 },
}

/// Settings from the file; `None` where the file does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub listen: Option<SocketAddr>,
    pub web_config: Option<PathBuf>,
    pub pin_dir: Option<PathBuf>,
    pub ring_buffer_bytes: Option<u32>,
    pub name_containers: Option<bool>,
    /// `auto`, `fentry` or `tracepoint` (see `crate::bpf::hooks`).
    pub hooks: Option<crate::bpf::HookChoice>,
    /// Interfaces the classifiers can count at once (the size of their counter arrays).
    pub max_interfaces: Option<u32>,
    /// Count by transport protocol too (the `*_protocol_*` metric families).
    pub traffic_protocols: Option<bool>,
}

impl AgentConfig {
    /// Reads and checks `path`; relative paths inside are made relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = crate::textfile::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Self::parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|err| match err {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: shown.clone(), source },
            ConfigError::RingBuffer { value, .. } => ConfigError::RingBuffer { path: shown.clone(), value },
            ConfigError::MaxInterfaces { value, .. } => ConfigError::MaxInterfaces { path: shown.clone(), value },
            other => other,
        })
    }

    /// Parses and checks `text` as if read from a file in directory `base` (public for the fuzz targets).
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        // An empty file is an empty configuration, not an error.
        let mut config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_norway::from_str(text).map_err(|source| ConfigError::Parse { path: String::new(), source })?
        };
        if let Some(value) = config.ring_buffer_bytes
            && !(value >= 4096 && value.is_power_of_two())
        {
            return Err(ConfigError::RingBuffer { path: String::new(), value });
        }
        if let Some(value) = config.max_interfaces
            && !valid_max_interfaces(value)
        {
            return Err(ConfigError::MaxInterfaces { path: String::new(), value });
        }
        for path in [&mut config.web_config, &mut config.pin_dir].into_iter().flatten() {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        Ok(config)
    }
}

/// Whether `value` can size the classifiers' counter arrays.
pub fn valid_max_interfaces(value: u32) -> bool {
    (1..=netns_monitor_common::traffic::MAX_SLOTS).contains(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_field_and_resolves_relative_paths() {
        let text = "listen: 127.0.0.1:9999\nweb_config: web.yml\npin_dir: /sys/fs/bpf/x\nring_buffer_bytes: 8192\n\
                    name_containers: true\nmax_interfaces: 40000\ntraffic_protocols: true\n";
        let config = AgentConfig::parse(text, Path::new("/etc/netns-monitor")).unwrap();
        assert_eq!(config.listen, Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(config.web_config, Some(PathBuf::from("/etc/netns-monitor/web.yml")));
        assert_eq!(config.pin_dir, Some(PathBuf::from("/sys/fs/bpf/x")));
        assert_eq!(config.ring_buffer_bytes, Some(8192));
        assert_eq!(config.name_containers, Some(true));
        assert_eq!((config.max_interfaces, config.traffic_protocols), (Some(40000), Some(true)));
        assert_eq!(AgentConfig::parse("", Path::new("/")).unwrap(), AgentConfig::default());
    }

    #[test]
    fn rejects_unknown_fields_bad_values_and_names_the_file() {
        for text in [
            "listn: 127.0.0.1:1\n",
            "listen: nowhere\n",
            "ring_buffer_bytes: 5000\n",
            "max_interfaces: 0\n",
            "max_interfaces: 65536\n",
            "traffic_protocols: maybe\n",
            "- a\n- b\n",
        ] {
            assert!(AgentConfig::parse(text, Path::new("/")).is_err(), "{text}");
        }
        let dir = std::env::temp_dir().join(format!("nsm-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.yml");
        std::fs::write(&file, "listn: 1\n").unwrap();
        let err = AgentConfig::load(&file).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        let chain = crate::bpf::error_chain(&err);
        assert!(chain.contains("agent.yml") && chain.contains("listn"), "{chain}");
    }
}
