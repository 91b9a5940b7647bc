//! Just enough of a PromQL scanner to say which metric names, label matchers and grouping labels an
//! expression uses, so dashboards and alert rules can be checked against the metrics contract without a
//! running agent. Prometheus itself is the parser of record (the live dashboard test and `promtool`); this only
//! has to find names, not validate syntax.

use std::collections::BTreeSet;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Str,
    Number,
    Var,
    Punct(char),
}

/// Words that look like identifiers but are operators or modifiers, not metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

fn tokenize(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' && c != '`' { 2 } else { 1 };
            }
            i += 1;
            tokens.push(Token::Str);
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            tokens.push(Token::Number);
        } else if c == '$' {
            // A Grafana variable ($name or ${name}) left in a raw dashboard expression.
            i += 1;
            if chars.get(i) == Some(&'{') {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
            }
            tokens.push(Token::Var);
        } else if ident_start(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    tokens
}

/// One vector selector: its metric name (if written before the braces) and the labels it matches on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub metric: Option<String>,
    pub labels: Vec<String>,
}

/// What an expression refers to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Analysis {
    pub metrics: BTreeSet<String>,
    pub selectors: Vec<Selector>,
    /// Labels in `by`, `without`, `on`, `ignoring`, `group_left` and `group_right` lists.
    pub grouping: BTreeSet<String>,
}

/// Scans `expr` for metric names, selectors and grouping labels.
pub fn analyze(expr: &str) -> Analysis {
    let tokens = tokenize(expr);
    let mut analysis = Analysis::default();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Ident(word)
                if LABEL_LISTS.contains(&word.as_str()) && tokens.get(i + 1) == Some(&Token::Punct('(')) =>
            {
                i += 2;
                while i < tokens.len() && tokens[i] != Token::Punct(')') {
                    if let Token::Ident(label) = &tokens[i] {
                        analysis.grouping.insert(label.clone());
                    }
                    i += 1;
                }
            }
            Token::Ident(word) if KEYWORDS.contains(&word.as_str()) => {}
            // A function or aggregation call, or an aggregation with its grouping first (`sum by (x) (...)`).
            Token::Ident(_) if tokens.get(i + 1) == Some(&Token::Punct('(')) => {}
            Token::Ident(_) if matches!(tokens.get(i + 1), Some(Token::Ident(w)) if w == "by" || w == "without") => {}
            Token::Ident(metric) => {
                analysis.metrics.insert(metric.clone());
                let mut selector = Selector { metric: Some(metric.clone()), labels: Vec::new() };
                if tokens.get(i + 1) == Some(&Token::Punct('{')) {
                    i = matchers(&tokens, i + 2, &mut selector.labels);
                }
                analysis.selectors.push(selector);
            }
            Token::Punct('{') => {
                let mut selector = Selector { metric: None, labels: Vec::new() };
                i = matchers(&tokens, i + 1, &mut selector.labels);
                analysis.selectors.push(selector);
            }
            _ => {}
        }
        i += 1;
    }
    analysis
}

/// Collects matcher label names from just after `{` up to the closing `}`; returns the index of the `}`.
fn matchers(tokens: &[Token], mut i: usize, labels: &mut Vec<String>) -> usize {
    while i < tokens.len() && tokens[i] != Token::Punct('}') {
        if let Token::Ident(label) = &tokens[i] {
            labels.push(label.clone());
        }
        i += 1;
    }
    i
}

/// Label names used by a Grafana legend format such as `{{name}} {{netns}} receive`.
pub fn legend_labels(legend: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut rest = legend;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        labels.insert(after[..end].trim().to_owned());
        rest = &after[end + 2..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_metrics_matchers_and_grouping() {
        let a = analyze(
            r#"sum by (instance, program) (increase(netns_monitor_bpf_program_run_time_seconds_total{instance=~"$instance", program=~"tc_.*"}[$__rate_interval]))
            / on (instance) group_left sum(rate(x_total[5m])) and on(netns) {__name__="y"} > 0.5"#,
        );
        assert_eq!(
            a.metrics.into_iter().collect::<Vec<_>>(),
            ["netns_monitor_bpf_program_run_time_seconds_total", "x_total"]
        );
        assert_eq!(a.grouping.into_iter().collect::<Vec<_>>(), ["instance", "netns", "program"]);
        assert_eq!(a.selectors[0].labels, ["instance", "program"]);
        assert_eq!(a.selectors[2], Selector { metric: None, labels: vec!["__name__".into()] });
    }

    #[test]
    fn strings_and_functions_are_not_metrics() {
        let a = analyze(r#"label_join(netns_monitor_netns_info, "display", " ", "netns", "name") # comment up"#);
        assert_eq!(a.metrics.into_iter().collect::<Vec<_>>(), ["netns_monitor_netns_info"]);
        assert_eq!(legend_labels("{{name}} {{ netns }} rx"), ["name", "netns"].map(String::from).into());
    }
}
