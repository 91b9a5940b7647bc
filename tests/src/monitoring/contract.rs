//! The metrics contract, `docs/metrics.md`, read as data: every metric the agent exports and its labels.
//! Dashboards and alert rules are checked against it, so a name or label that the contract does not define
//! fails before any agent runs.

use std::collections::{BTreeMap, BTreeSet};

use super::promql;

/// Labels Prometheus adds to every scraped series.
pub const TARGET_LABELS: &[&str] = &["job", "instance"];

/// Metric names and their labels, from the tables of `docs/metrics.md`.
#[derive(Debug)]
pub struct Contract {
    pub metrics: BTreeMap<String, BTreeSet<String>>,
    /// Families given by a prefix (`process_*`): any name starting with it, labels unknown.
    pub prefixes: Vec<String>,
}

impl Contract {
    /// Reads `docs/metrics.md` from the workspace.
    pub fn load() -> Self {
        let contract = Self::parse(&super::read_repo_file("docs/metrics.md"));
        assert!(
            contract.metrics.len() >= 20 && contract.metrics.keys().all(|m| m.starts_with("netns_monitor_")),
            "docs/metrics.md did not parse into the metrics contract (table rows `| `name` | type | labels |`): \
             {contract:#?}"
        );
        contract
    }

    /// Table rows of the form ``| `name` | type | label, label (note) | ...``.
    pub fn parse(markdown: &str) -> Self {
        let mut metrics = BTreeMap::new();
        let mut prefixes = Vec::new();
        for line in markdown.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`');
            if let Some(prefix) = name.strip_suffix('*') {
                prefixes.push(prefix.to_owned());
                continue;
            }
            let labels = cells
                .get(3)
                .map(|cell| {
                    cell.split(',')
                        .map(|l| {
                            l.trim().chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>()
                        })
                        .filter(|l| !l.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            metrics.insert(name.to_owned(), labels);
        }
        Self { metrics, prefixes }
    }

    /// Whether `metric` is defined (by name, by prefix, or Prometheus' own `up`).
    pub fn knows(&self, metric: &str) -> bool {
        metric == "up" || self.metrics.contains_key(metric) || self.prefixes.iter().any(|p| metric.starts_with(p))
    }

    /// Problems with `expr` (and the legend format of its panel target, if any) against the contract: unknown
    /// metrics, matchers on labels the metric does not have, grouping or legend labels that none of the
    /// expression's metrics has.
    pub fn check(&self, expr: &str, legend: Option<&str>) -> Vec<String> {
        let analysis = promql::analyze(expr);
        let mut problems = Vec::new();
        let mut available: BTreeSet<String> = TARGET_LABELS.iter().map(|l| (*l).to_owned()).collect();
        for metric in &analysis.metrics {
            if !self.knows(metric) {
                problems.push(format!("metric `{metric}` is not in docs/metrics.md"));
            }
            available.extend(self.metrics.get(metric).into_iter().flatten().cloned());
        }
        for selector in &analysis.selectors {
            let Some(labels) = selector.metric.as_ref().and_then(|m| self.metrics.get(m)) else { continue };
            for label in &selector.labels {
                if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                    problems.push(format!(
                        "`{}` has no label `{label}` (docs/metrics.md: {labels:?})",
                        selector.metric.as_deref().unwrap_or_default()
                    ));
                }
            }
        }
        let legend_labels = legend.map(promql::legend_labels).unwrap_or_default();
        for label in analysis.grouping.iter().chain(&legend_labels) {
            if !available.contains(label) {
                problems.push(format!("label `{label}` is on none of the metrics used ({:?})", analysis.metrics));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::Contract;

    const DOC: &str = "| metric | type | labels |\n|---|---|---|\n\
        | `netns_monitor_a_total` | counter | netns, name (sum over x) |\n\
        | `netns_monitor_b` | gauge | — | meaning |\n| `process_*` | | | |\n";

    #[test]
    fn parses_tables_and_checks_expressions() {
        let c = Contract::parse(DOC);
        assert_eq!(c.metrics["netns_monitor_a_total"], ["name", "netns"].map(String::from).into());
        assert!(c.metrics["netns_monitor_b"].is_empty());
        assert!(c.knows("process_cpu_seconds_total"));
        assert!(
            c.check(r#"sum by (netns) (rate(netns_monitor_a_total{instance="x"}[1m]))"#, Some("{{netns}}")).is_empty()
        );
        let problems = c.check(r#"sum by (device) (netns_monitor_b{netns="1"}) + netns_monitor_c"#, Some("{{nme}}"));
        assert_eq!(problems.len(), 4, "{problems:#?}");
    }
}
