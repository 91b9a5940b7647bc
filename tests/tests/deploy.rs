//! The deployment files against the tools that judge them for real:
//! - deploy/systemd/netns-monitor.service with `systemd-analyze verify` (syntax, every directive known, the
//!   binary executable: the unit is copied with ExecStart pointing at the CLI under test) and `systemd-analyze
//!   security --offline` (the hardening does not regress past its exposure score);
//! - deploy/kubernetes/*.yaml with `kubernetes-validate --strict` against the oldest and newest Kubernetes
//!   the manifests are for, plus the cross-object references no schema can see (selectors, ports, names).
//!   The ServiceMonitor is a custom resource kubernetes-validate has no schema for; it checks that it parses
//!   and has apiVersion/kind, and this test checks what it refers to.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use netns_monitor_tests::{
    monitoring::{
        TempDir,
        python::{kubernetes_validate, yaml_document},
        read_repo_file, repo_file, require_program,
    },
    netns::cli_path,
};
use serde_json::Value;

const UNIT: &str = "deploy/systemd/netns-monitor.service";
const INSTALLED_BINARY: &str = "/usr/local/bin/netns-monitor";
/// `systemd-analyze security` exposure, 0-100 (shown as 0.0-10.0). The unit scores 3.6: root with
/// CAP_SYS_ADMIN, CAP_BPF and host networking is what an eBPF agent is; everything else is locked down.
const MAX_EXPOSURE: &str = "40";
/// Kubernetes releases the manifests are validated against: appArmorProfile needs 1.30; the newest the tool
/// knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// The capabilities the agent checks for at start (required and optional), sorted, as `CAP_*` names.
fn agent_capabilities() -> Vec<String> {
    use netns_monitor::privileges::{AGENT_OPTIONAL, AGENT_REQUIRED};
    let mut caps: Vec<String> = AGENT_REQUIRED.iter().chain(AGENT_OPTIONAL).map(|need| need.cap.name()).collect();
    caps.sort_unstable();
    caps
}

fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The unit with ExecStart pointing at `binary`, written to a temp dir (systemd-analyze verify checks that the
/// binary exists and is executable).
fn unit_copy(dir: &TempDir, unit: &str, binary: &Path) -> PathBuf {
    assert!(
        unit.contains(&format!("ExecStart={INSTALLED_BINARY} ")),
        "{UNIT}: ExecStart must start with {INSTALLED_BINARY}"
    );
    dir.write("netns-monitor.service", &unit.replace(INSTALLED_BINARY, &binary.display().to_string()))
}

fn systemd_analyze(args: &[&str], unit: &Path) -> Output {
    Command::new(require_program("systemd-analyze", "systemd"))
        .args(args)
        .arg(unit)
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd-analyze: {e}"))
}

/// Directives of the unit as (key, value) pairs.
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn systemd_unit_verifies_and_keeps_its_hardening() {
    let unit = read_repo_file(UNIT);
    let dir = TempDir::new("nsm-unit");
    let copy = unit_copy(&dir, &unit, &cli_path());

    // systemd-analyze exits 0 even when it ignores a directive it cannot parse; it says so on stderr, so
    // the output must be empty.
    let verify = systemd_analyze(&["verify"], &copy);
    assert!(
        verify.status.success() && output_text(&verify).trim().is_empty(),
        "systemd-analyze verify {UNIT} ({}):\n{}",
        verify.status,
        output_text(&verify)
    );

    let security = systemd_analyze(&["security", "--offline=yes", &format!("--threshold={MAX_EXPOSURE}")], &copy);
    assert!(
        security.status.success(),
        "systemd-analyze security: exposure above {MAX_EXPOSURE}/100:\n{}",
        output_text(&security)
    );

    // What the agent needs, and nothing that would break it (see the unit's header).
    let set = directives(&unit);
    let value = |key: &str| set.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(" ");
    let bounding = value("CapabilityBoundingSet");
    let mut caps: Vec<&str> = bounding.split_whitespace().collect();
    caps.sort_unstable();
    assert_eq!(caps, agent_capabilities(), "capabilities: exactly what the agent asks for (netns_monitor::privileges)");
    for (key, expected) in [
        ("ExecStart", "/usr/local/bin/netns-monitor run --listen 127.0.0.1:10931"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("RestrictNamespaces", "net"),
        ("LimitMEMLOCK", "infinity"),
    ] {
        assert_eq!(value(key), expected, "{UNIT}: {key}");
    }
    assert!(value("ReadWritePaths").split_whitespace().any(|p| p == "/sys/fs/bpf"), "pins need /sys/fs/bpf writable");
    for forbidden in ["PrivateNetwork", "PrivateUsers", "ProtectProc", "ProcSubset", "DynamicUser"] {
        assert!(value(forbidden).is_empty(), "{UNIT}: {forbidden}= hides the host from the agent");
    }
}

/// The verification is not vacuous: a missing binary and an unparsable directive both fail it.
#[test]
fn systemd_verify_rejects_a_broken_unit() {
    let unit = read_repo_file(UNIT);
    let dir = TempDir::new("nsm-unit-bad");
    let missing = unit_copy(&dir, &unit, &dir.path.join("no-such-binary"));
    let out = systemd_analyze(&["verify"], &missing);
    assert!(!out.status.success(), "verify accepted a unit whose binary does not exist:\n{}", output_text(&out));

    let typo = unit_copy(&dir, &unit.replace("ProtectSystem=strict", "ProtectSystem=strcit"), &cli_path());
    let out = systemd_analyze(&["verify"], &typo);
    assert!(!output_text(&out).trim().is_empty(), "verify said nothing about ProtectSystem=strcit");
}

fn manifests() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["deploy/kubernetes", "deploy/kubernetes/prometheus-operator"] {
        for entry in std::fs::read_dir(repo_file(dir)).expect("read deploy/kubernetes") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn validate(path: &Path, version: &str) -> Output {
    kubernetes_validate()
        .args(["--strict", "--kubernetes-version", version])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubernetes-validate: {e}"))
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let files = manifests();
    let kinds: Vec<String> =
        files.iter().map(|f| yaml_document(f)["kind"].as_str().unwrap_or_default().to_owned()).collect();
    for kind in ["Namespace", "ServiceAccount", "DaemonSet", "Service", "ServiceMonitor"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in deploy/kubernetes: {kinds:?}");
    }
    for (file, kind) in files.iter().zip(&kinds) {
        for version in KUBERNETES_VERSIONS {
            let out = validate(file, version);
            let text = output_text(&out);
            assert!(out.status.success(), "kubernetes-validate {}:\n{text}", file.display());
            if kind == "ServiceMonitor" {
                // A custom resource: the tool has no schema and says exactly that, nothing else.
                assert!(
                    text.contains("Couldn't find schema for kind ServiceMonitor") || text.contains("passed"),
                    "kubernetes-validate on the ServiceMonitor: {text}"
                );
            } else {
                assert!(text.contains("passed"), "kubernetes-validate did not validate {}: {text}", file.display());
            }
        }
    }
}

/// kubernetes-validate's strict mode is the real check: an unknown field and a wrong type both fail it.
#[test]
fn kubernetes_validate_rejects_broken_manifests() {
    let daemonset = read_repo_file("deploy/kubernetes/20-daemonset.yaml");
    let dir = TempDir::new("nsm-k8s-bad");
    for (what, from, to) in [
        ("unknown field", "hostPID: true", "hostPid: true"),
        ("wrong type", "containerPort: 10931", "containerPort: \"10931\""),
    ] {
        assert!(daemonset.contains(from), "the DaemonSet no longer contains {from:?}; update this test");
        let bad = dir.write("daemonset.yaml", &daemonset.replacen(from, to, 1));
        let out = validate(&bad, "1.37.0");
        assert!(
            !out.status.success(),
            "kubernetes-validate accepted a DaemonSet with a {what}:\n{}",
            output_text(&out)
        );
    }
}

fn load(file: &str) -> Value {
    yaml_document(&repo_file(&format!("deploy/kubernetes/{file}")))
}

/// What the schemas cannot see: the objects refer to each other correctly, and the DaemonSet is the
/// capability-limited, non-privileged pod the issue asks for.
#[test]
fn kubernetes_objects_fit_together() {
    let namespace = load("00-namespace.yaml");
    let account = load("10-serviceaccount.yaml");
    let daemonset = load("20-daemonset.yaml");
    let service = load("30-service.yaml");
    let monitor = load("prometheus-operator/servicemonitor.yaml");
    let ns = namespace["metadata"]["name"].as_str().expect("namespace name");
    for object in [&account, &daemonset, &service, &monitor] {
        assert_eq!(object["metadata"]["namespace"], ns, "{} is not in namespace {ns}", object["kind"]);
    }
    assert_eq!(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged");

    let pod = &daemonset["spec"]["template"];
    let spec = &pod["spec"];
    let matches = |selector: &Value, labels: &Value| {
        selector.as_object().is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
    };
    assert!(matches(&daemonset["spec"]["selector"]["matchLabels"], &pod["metadata"]["labels"]), "DaemonSet selector");
    assert!(matches(&service["spec"]["selector"], &pod["metadata"]["labels"]), "Service selector misses the pods");
    assert_eq!(spec["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(spec["hostPID"], true, "hostPID: the agent reads every process's namespaces");
    assert_eq!(spec["hostNetwork"], true, "hostNetwork: the agent watches the host's network namespace");

    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let agent = &containers[0];
    let security = &agent["securityContext"];
    assert_ne!(security["privileged"], true, "the agent must not be privileged");
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mut added: Vec<&str> = security["capabilities"]["add"]
        .as_array()
        .expect("added capabilities")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    added.sort_unstable();
    // A pod cannot set RLIMIT_MEMLOCK (the unit uses LimitMEMLOCK=infinity instead): the agent raises it itself.
    let mut expected: Vec<String> =
        agent_capabilities().iter().map(|cap| cap.trim_start_matches("CAP_").to_owned()).collect();
    expected.push(netns_monitor::privileges::AGENT_MEMLOCK.cap.name().trim_start_matches("CAP_").to_owned());
    expected.sort_unstable();
    assert_eq!(added, expected, "exactly what the agent asks for (netns_monitor::privileges)");
    // The API server rejects allowPrivilegeEscalation: false together with CAP_SYS_ADMIN.
    assert_ne!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);

    // The agent listens where the Service and the probes look, on the node's address, behind its web-config.
    let args: Vec<&str> = agent["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert_eq!(args.first(), Some(&"run"));
    let port = agent["ports"][0]["containerPort"].as_u64().expect("containerPort");
    assert_eq!(port, 10931, "docs/metrics.md's port");
    assert!(args.contains(&format!("--listen=$(HOST_IP):{port}").as_str()), "--listen on the node address: {args:?}");
    let host_ip = agent["env"].as_array().expect("env").iter().find(|e| e["name"] == "HOST_IP").expect("HOST_IP env");
    assert_eq!(host_ip["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP");
    let port_name = agent["ports"][0]["name"].as_str().expect("port name");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port_name);
    assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(port));
    assert_eq!(service["metadata"]["annotations"]["prometheus.io/port"], port.to_string());
    assert_eq!(service["metadata"]["annotations"]["prometheus.io/scrape"], "true");

    // Mounts: host paths the agent reads or writes, each backed by a volume.
    let volumes = spec["volumes"].as_array().expect("volumes");
    let mounts = agent["volumeMounts"].as_array().expect("volumeMounts");
    let host_path_of = |mount_path: &str| -> (String, &Value) {
        let mount =
            mounts.iter().find(|m| m["mountPath"] == mount_path).unwrap_or_else(|| panic!("no mount at {mount_path}"));
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).expect("mount without volume");
        (volume["hostPath"]["path"].as_str().unwrap_or_default().to_owned(), mount)
    };
    for path in ["/sys/fs/bpf", "/sys/kernel/tracing", "/sys/kernel/btf", "/run/netns"] {
        let (host, mount) = host_path_of(path);
        assert_eq!(host, path, "{path} must be the host's");
        if let Some(propagation) = mount["mountPropagation"].as_str() {
            assert!(
                ["None", "HostToContainer"].contains(&propagation),
                "{path}: mountPropagation {propagation} (Bidirectional needs a privileged container)"
            );
        }
    }
    let web_config = args.iter().find_map(|a| a.strip_prefix("--web-config=")).expect("--web-config");
    let (_, mount) = host_path_of(Path::new(web_config).parent().unwrap().to_str().unwrap());
    let secret = volumes.iter().find(|v| v["name"] == mount["name"]).expect("web-config volume");
    assert!(secret["secret"]["secretName"].is_string(), "the web-config comes from a Secret");
    for mount in mounts {
        assert!(volumes.iter().any(|v| v["name"] == mount["name"]), "mount {} has no volume", mount["name"]);
    }

    // The ServiceMonitor selects the Service, scrapes its named port over TLS with basic auth, and names
    // the job as alerts.yml expects.
    let spec = &monitor["spec"];
    assert!(matches(&spec["selector"]["matchLabels"], &service["metadata"]["labels"]), "ServiceMonitor selector");
    assert!(spec["namespaceSelector"]["matchNames"].as_array().expect("matchNames").iter().any(|n| n == ns));
    let endpoint = &spec["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"], "endpoint port name");
    assert_eq!(endpoint["scheme"], "https");
    assert!(endpoint["basicAuth"]["password"]["name"].is_string(), "basic auth from a Secret");
    let job_label = spec["jobLabel"].as_str().expect("jobLabel");
    assert_eq!(service["metadata"]["labels"][job_label], "netns-monitor", "alerts.yml selects job=\"netns-monitor\"");
}
