//! The result protocol between the check binary in the guest and this runner, read off the serial console.
//!
//! The check binary prints `NMK-RESULT {"check": ..., "status": "pass"|"degraded"|"fail", "detail": ...,
//! "ms": ...}` per check and `NMK-END` when it is done. The console interleaves kernel messages with it, so
//! the markers are looked for anywhere in a line (a message may be glued in front) and only the first JSON
//! value after the marker is read (anything glued behind it is ignored).

use serde::{Deserialize, Serialize};

pub const RESULT_MARKER: &str = "NMK-RESULT";
pub const END_MARKER: &str = "NMK-END";

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Degraded,
    Fail,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct CheckResult {
    pub check: String,
    pub status: Status,
    #[serde(default)]
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
}

impl CheckResult {
    pub fn fail(check: &str, detail: String) -> Self {
        CheckResult { check: check.into(), status: Status::Fail, detail, ms: None }
    }
}

#[derive(Debug, PartialEq)]
pub enum Line {
    Result(CheckResult),
    End,
    /// A result marker with something after it that is not a result: the result it carried is lost.
    Garbled(String),
}

pub fn parse_line(line: &str) -> Option<Line> {
    if let Some(at) = line.find(RESULT_MARKER) {
        let rest = &line[at + RESULT_MARKER.len()..];
        let Some(json_at) = rest.find('{') else {
            return Some(Line::Garbled(line.trim().to_owned()));
        };
        let mut values = serde_json::Deserializer::from_str(&rest[json_at..]).into_iter::<CheckResult>();
        return Some(match values.next() {
            Some(Ok(result)) => Line::Result(result),
            _ => Line::Garbled(line.trim().to_owned()),
        });
    }
    line.contains(END_MARKER).then_some(Line::End)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_found_anywhere_in_a_line() {
        let plain = r#"NMK-RESULT {"check": "load", "status": "pass", "detail": "", "ms": 12.5}"#;
        let Some(Line::Result(r)) = parse_line(plain) else { panic!() };
        assert_eq!((r.check.as_str(), r.status, r.ms), ("load", Status::Pass, Some(12.5)));

        let glued =
            "[    3.141592] veth: loadedNMK-RESULT {\"check\":\"pin\",\"status\":\"degraded\",\"detail\":\"no\"}\r";
        let Some(Line::Result(r)) = parse_line(glued) else { panic!() };
        assert_eq!((r.check.as_str(), r.status, r.detail.as_str(), r.ms), ("pin", Status::Degraded, "no", None));

        let trailing = r#"NMK-RESULT {"check": "x", "status": "fail"}[    4.0] random: crng init done"#;
        assert!(matches!(parse_line(trailing), Some(Line::Result(CheckResult { status: Status::Fail, .. }))));
    }

    #[test]
    fn end_garbage_and_other_lines() {
        assert_eq!(parse_line("NMK-END\r"), Some(Line::End));
        assert_eq!(parse_line("[ 1.0] foo NMK-END"), Some(Line::End));
        assert!(matches!(parse_line(r#"NMK-RESULT {"check": "x", "sta[ 2.0] tus""#), Some(Line::Garbled(_))));
        assert!(matches!(parse_line(r#"NMK-RESULT {"check": "x", "status": "great"}"#), Some(Line::Garbled(_))));
        assert_eq!(parse_line("[    0.000000] Linux version 6.1.0"), None);
    }
}
