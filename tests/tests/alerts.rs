//! The alert rules (grafana/alerts.yml) against promtool, Prometheus' own rule checker and unit-test runner:
//! the rules are valid, every alert fires and stays quiet where alerts.test.yml says, the tests catch broken
//! rules, and every expression uses only metrics and labels of the contract (docs/metrics.md).

use std::process::Command;

use netns_monitor_tests::monitoring::{
    TempDir, contract::Contract, python::yaml_document, read_repo_file, repo_file, require_program,
};

fn promtool(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(require_program("promtool", "prometheus"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool {args:?}: {e}"))
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let grafana = repo_file("grafana");
    let check = promtool(&["check", "rules", "alerts.yml"], &grafana);
    assert!(check.status.success(), "promtool check rules grafana/alerts.yml:\n{}", text(&check));

    let test = promtool(&["test", "rules", "alerts.test.yml"], &grafana);
    assert!(test.status.success(), "promtool test rules grafana/alerts.test.yml:\n{}", text(&test));
    assert!(text(&test).contains("SUCCESS"), "promtool printed no SUCCESS:\n{}", text(&test));
}

/// Every alert in alerts.yml has at least one firing and one quiet expectation in alerts.test.yml, so a new
/// rule cannot arrive untested.
#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let rules = yaml_document(&repo_file("grafana/alerts.yml"));
    let tests = yaml_document(&repo_file("grafana/alerts.test.yml"));
    let alerts: Vec<&str> = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert!(alerts.len() >= 4, "expected the agent-down, events-lost, attach-failure and silence alerts: {alerts:?}");
    let cases: Vec<(&str, bool)> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .map(|c| {
            let fires = c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            (c["alertname"].as_str().expect("alertname"), fires)
        })
        .collect();
    for alert in alerts {
        for fires in [true, false] {
            assert!(
                cases.contains(&(alert, fires)),
                "alerts.test.yml has no case where {alert} {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
}

/// The unit tests have teeth: each of these plausible mistakes in the rules makes `promtool test rules` fail.
#[test]
fn unit_tests_catch_broken_rules() {
    let rules = read_repo_file("grafana/alerts.yml");
    let tests = read_repo_file("grafana/alerts.test.yml");
    let mutations = [
        ("agent down reported too early", "for: 5m", "for: 1m"),
        ("ring buffer threshold too high", "> 0.8", "> 0.95"),
        (
            "loss window too long",
            "increase(netns_monitor_events_lost_total{job=\"netns-monitor\"}[10m])",
            "increase(netns_monitor_events_lost_total{job=\"netns-monitor\"}[30m])",
        ),
        (
            "silence alert without its interface guard",
            "and on (instance, netns) netns_monitor_netns_interfaces{job=\"netns-monitor\"} > 0\n",
            "\n",
        ),
        (
            "silence alert without its process guard",
            "and on (instance, netns) netns_monitor_netns_processes{job=\"netns-monitor\"} > 0\n",
            "\n",
        ),
        ("silence reported after half an hour", "for: 1h", "for: 30m"),
        ("attach failures on the wrong label", "{{ $labels.hook }} attachments", "{{ $labels.device }} attachments"),
        ("job renamed", "up{job=\"netns-monitor\"} == 0", "up{job=\"netns_monitor\"} == 0"),
    ];
    for (what, from, to) in mutations {
        assert!(rules.contains(from), "mutation {what:?}: alerts.yml no longer contains {from:?}; update this test");
        let dir = TempDir::new("nsm-alerts");
        dir.write("alerts.yml", &rules.replacen(from, to, 1));
        dir.write("alerts.test.yml", &tests);
        let out = promtool(&["test", "rules", "alerts.test.yml"], &dir.path);
        assert!(!out.status.success(), "promtool test rules passed although the rules were broken ({what})");
    }
}

#[test]
fn alert_expressions_use_only_contract_metrics_and_labels() {
    let contract = Contract::load();
    let rules = yaml_document(&repo_file("grafana/alerts.yml"));
    let mut problems = Vec::new();
    for rule in rules["groups"].as_array().expect("groups").iter().flat_map(|g| g["rules"].as_array().expect("rules")) {
        let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap_or("?");
        let expr = rule["expr"].as_str().expect("expr");
        problems.extend(contract.check(expr, None).into_iter().map(|p| format!("{name}: {p}")));
        for label in ["severity"] {
            if rule["alert"].is_string() && rule["labels"][label].as_str().is_none() {
                problems.push(format!("{name}: no {label} label"));
            }
        }
        for annotation in ["summary", "description"] {
            if rule["alert"].is_string() && rule["annotations"][annotation].as_str().is_none() {
                problems.push(format!("{name}: no {annotation} annotation"));
            }
        }
    }
    assert!(problems.is_empty(), "alert rules disagree with docs/metrics.md:\n{}", problems.join("\n"));
}
