//! The dashboards of `grafana/dashboards/` as data: their panels, every PromQL expression in them (panel
//! targets and variable queries), Grafana's variable interpolation, and the structural rules a dashboard must
//! follow to load in a stock Grafana.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use serde_json::Value;

/// Grafana's grid is 24 columns wide.
pub const GRID_COLUMNS: u64 = 24;
/// The datasource every panel, target and query variable uses: the dashboard's `datasource` variable.
pub const DATASOURCE_UID: &str = "${datasource}";

/// One dashboard file.
pub struct Dashboard {
    pub file: String,
    pub json: Value,
}

/// Every `*.json` in grafana/dashboards, sorted by file name.
pub fn dashboards() -> Vec<Dashboard> {
    let dir = super::repo_file("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            Dashboard { file: path.file_name().unwrap().to_string_lossy().into_owned(), json }
        })
        .collect()
}

/// A PromQL expression found in a dashboard, with where it came from.
#[derive(Clone, Debug)]
pub struct Query {
    /// `file / panel "title" (id N) / A` or `file / variable netns`.
    pub location: String,
    pub expr: String,
    pub legend: Option<String>,
}

/// How a query variable gets its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VariableQuery {
    /// `label_values(selector, label)`: the values of `label` on the series `selector` matches.
    LabelValues { selector: String, label: String },
    /// `query_result(expr)`: the series `expr` returns (a regex then picks text and value).
    QueryResult(String),
}

impl VariableQuery {
    /// Parses Grafana's Prometheus variable query syntax (the two forms the dashboards use).
    pub fn parse(query: &str) -> Result<Self, String> {
        let query = query.trim();
        if let Some(args) = query.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
            let (selector, label) =
                args.rsplit_once(',').ok_or_else(|| format!("label_values needs two arguments: {query}"))?;
            Ok(Self::LabelValues { selector: selector.trim().to_owned(), label: label.trim().to_owned() })
        } else if let Some(expr) = query.strip_prefix("query_result(").and_then(|r| r.strip_suffix(')')) {
            Ok(Self::QueryResult(expr.trim().to_owned()))
        } else {
            Err(format!("unsupported variable query (use label_values or query_result): {query}"))
        }
    }

    /// The PromQL that gives the same series Grafana reads the values from.
    pub fn promql(&self) -> String {
        match self {
            Self::LabelValues { selector, label } => format!("group by ({label}) ({selector})"),
            Self::QueryResult(expr) => expr.clone(),
        }
    }
}

impl Dashboard {
    /// Every panel, with the panels of collapsed rows.
    pub fn panels(&self) -> Vec<&Value> {
        let mut panels = Vec::new();
        for panel in self.json["panels"].as_array().into_iter().flatten() {
            panels.push(panel);
            panels.extend(panel["panels"].as_array().into_iter().flatten());
        }
        panels
    }

    /// The templating variables, in order.
    pub fn variables(&self) -> Vec<&Value> {
        self.json["templating"]["list"].as_array().into_iter().flatten().collect()
    }

    /// The query of a query variable (a string, or an object with a `query` field in newer Grafana).
    pub fn variable_query(variable: &Value) -> Option<&str> {
        variable["query"].as_str().or_else(|| variable["query"]["query"].as_str())
    }

    /// Every PromQL expression of the panels' targets.
    pub fn target_queries(&self) -> Vec<Query> {
        let mut queries = Vec::new();
        for panel in self.panels() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                queries.push(Query {
                    location: format!(
                        "{} / panel {:?} (id {}) / {}",
                        self.file,
                        panel["title"].as_str().unwrap_or_default(),
                        panel["id"],
                        target["refId"].as_str().unwrap_or("?")
                    ),
                    expr: target["expr"].as_str().unwrap_or_default().to_owned(),
                    legend: target["legendFormat"].as_str().map(str::to_owned),
                });
            }
        }
        queries
    }

    /// The PromQL of every query variable.
    pub fn variable_queries(&self) -> Vec<Query> {
        self.variables()
            .into_iter()
            .filter(|v| v["type"] == "query")
            .map(|v| Query {
                location: format!("{} / variable {}", self.file, v["name"].as_str().unwrap_or("?")),
                expr: Self::variable_query(v)
                    .and_then(|q| VariableQuery::parse(q).ok())
                    .map(|q| q.promql())
                    .unwrap_or_default(),
                legend: None,
            })
            .collect()
    }

    /// Everything wrong with the dashboard's structure; empty when it is fine.
    pub fn structure_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut problem = |what: String| problems.push(format!("{}: {what}", self.file));
        let d = &self.json;
        for key in ["title", "uid"] {
            if d[key].as_str().is_none_or(str::is_empty) {
                problem(format!("no {key}"));
            }
        }
        if d["uid"].as_str().is_some_and(|uid| uid.len() > 40) {
            problem("uid longer than Grafana's 40 characters".into());
        }
        if d["schemaVersion"].as_u64().is_none_or(|v| v < 36) {
            problem(format!("schemaVersion {} is older than 36 (Grafana 9)", d["schemaVersion"]));
        }
        if !d["id"].is_null() {
            problem("`id` must be null so Grafana assigns one on import and provisioning".into());
        }

        // Variables: a datasource variable, query variables on it, unique names.
        let variables = self.variables();
        let names: Vec<&str> = variables.iter().filter_map(|v| v["name"].as_str()).collect();
        if names.iter().collect::<BTreeSet<_>>().len() != names.len() {
            problem(format!("duplicate variable names: {names:?}"));
        }
        match variables.iter().find(|v| v["name"] == "datasource") {
            Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
            _ => problem("no `datasource` variable of type datasource for prometheus".into()),
        }
        for v in variables.iter().filter(|v| v["type"] == "query") {
            let name = v["name"].as_str().unwrap_or("?");
            if v["datasource"]["uid"] != DATASOURCE_UID || v["datasource"]["type"] != "prometheus" {
                problem(format!("variable {name}: datasource is not {{prometheus, {DATASOURCE_UID}}}"));
            }
            match Self::variable_query(v).map(VariableQuery::parse) {
                Some(Ok(_)) => {}
                Some(Err(e)) => problem(format!("variable {name}: {e}")),
                None => problem(format!("variable {name}: no query")),
            }
        }

        // Panels: unique ids, a datasource and targets with expressions, a valid non-overlapping grid position.
        let mut ids = BTreeMap::new();
        let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
        for panel in self.panels() {
            let title = panel["title"].as_str().unwrap_or_default();
            let label = format!("panel {title:?} (id {})", panel["id"]);
            match panel["id"].as_u64() {
                Some(id) => {
                    if let Some(other) = ids.insert(id, title) {
                        problem(format!("{label}: id also used by {other:?}"));
                    }
                }
                None => problem(format!("{label}: no numeric id")),
            }
            if panel["type"].as_str().is_none_or(str::is_empty) {
                problem(format!("{label}: no type"));
            }
            let pos = &panel["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| pos[k].as_u64());
            let (Some(x), Some(y), Some(w), Some(h)) = (x, y, w, h) else {
                problem(format!("{label}: gridPos needs integer x, y, w, h: {pos}"));
                continue;
            };
            if w == 0 || h == 0 || x + w > GRID_COLUMNS {
                problem(format!("{label}: gridPos {pos} is empty or wider than {GRID_COLUMNS} columns"));
            }
            let mut overlapped = BTreeSet::new();
            for cx in x..(x + w).min(GRID_COLUMNS) {
                for cy in y..y + h {
                    if let Some(other) = cells.insert((cx, cy), title.to_owned())
                        && overlapped.insert(other.clone())
                    {
                        problem(format!("{label}: overlaps panel {other:?} (first at column {cx}, row {cy})"));
                    }
                }
            }
            if panel["type"] == "row" {
                continue;
            }
            if panel["datasource"]["uid"] != DATASOURCE_UID || panel["datasource"]["type"] != "prometheus" {
                problem(format!(
                    "{label}: datasource is not {{prometheus, {DATASOURCE_UID}}}: {}",
                    panel["datasource"]
                ));
            }
            let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
            if targets.is_empty() {
                problem(format!("{label}: no targets"));
            }
            let mut refs = BTreeSet::new();
            for target in targets {
                let ref_id = target["refId"].as_str().unwrap_or_default();
                if ref_id.is_empty() || !refs.insert(ref_id) {
                    problem(format!("{label}: missing or duplicate refId {ref_id:?}"));
                }
                if target["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                    problem(format!("{label} / {ref_id}: no expr"));
                }
                if target["datasource"]["uid"] != DATASOURCE_UID {
                    problem(format!("{label} / {ref_id}: target datasource is not {DATASOURCE_UID}"));
                }
            }
        }
        problems
    }
}

/// Grafana's interpolation of `$name`, `${name}` and `[[name]]` in an expression, from `values`. Fails on a
/// reference to anything `values` does not define (a typo, or a variable the dashboard lacks), and on a
/// `${name:format}` the tests do not model.
pub fn interpolate(expr: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    let ident_len = |s: &str| s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    loop {
        let dollar = rest.find('$');
        let bracket = rest.find("[[");
        let (start, name, end) = match (dollar, bracket) {
            (None, None) => break,
            (Some(d), b) if b.is_none_or(|b| d < b) => {
                let after = &rest[d + 1..];
                if let Some(inner) = after.strip_prefix('{') {
                    let close = inner.find('}').ok_or_else(|| format!("unclosed ${{ in {expr}"))?;
                    (d, &inner[..close], d + 2 + close + 1)
                } else {
                    let len = ident_len(after);
                    (d, &after[..len], d + 1 + len)
                }
            }
            (_, Some(b)) => {
                let after = &rest[b + 2..];
                let close = after.find("]]").ok_or_else(|| format!("unclosed [[ in {expr}"))?;
                (b, &after[..close], b + 2 + close + 2)
            }
            (Some(_), None) => unreachable!("handled by the first arm"),
        };
        if name.is_empty() || name.contains(':') {
            return Err(format!("unsupported variable reference {:?} in {expr}", &rest[start..end]));
        }
        let value = values.get(name).ok_or_else(|| format!("${name} is not a variable of this dashboard: {expr}"))?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[end..];
    }
    out.push_str(rest);
    Ok(out)
}

/// How Grafana's Prometheus datasource formats the value of a multi-value or include-all variable: regex
/// metacharacters escaped (doubled backslashes, since the value lands inside a PromQL string literal).
pub fn regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    for c in value.chars() {
        if c == '\\' {
            out.push_str(r"\\\\");
        } else if r"$^*{}[]'+?.()|".contains(c) {
            out.push_str(r"\\");
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_like_grafana() {
        let values: BTreeMap<String, String> = [("netns", "42"), ("__rate_interval", "4s"), ("__range", "1m")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        assert_eq!(
            interpolate(r#"rate(x{netns="$netns"}[$__rate_interval]) + y{a="${netns}"} + z{b="[[netns]]"}"#, &values)
                .unwrap(),
            r#"rate(x{netns="42"}[4s]) + y{a="42"} + z{b="42"}"#
        );
        assert!(interpolate("x[$__interval]", &values).unwrap_err().contains("$__interval"));
        assert!(interpolate("x{a=\"${netns:csv}\"}", &values).is_err());
        assert_eq!(regex_escape("127.0.0.1:80"), r"127\\.0\\.0\\.1:80");
    }

    #[test]
    fn parses_variable_queries() {
        assert_eq!(
            VariableQuery::parse("label_values(m{a=\"b,c\"}, instance)").unwrap().promql(),
            "group by (instance) (m{a=\"b,c\"})"
        );
        assert_eq!(VariableQuery::parse("query_result(count(m))").unwrap().promql(), "count(m)");
        assert!(VariableQuery::parse("metrics(.*)").is_err());
    }
}
