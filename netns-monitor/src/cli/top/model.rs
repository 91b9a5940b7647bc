//! What `top` shows: samples of every namespace (processes, the agent's pinned traffic counters, the arrivals it
//! recorded), turned into rates between two samples, then filtered and sorted as the user asked.

use std::{collections::BTreeMap, path::PathBuf, time::Instant};

use crate::{
    inventory::{Inventory, Namer, ScanOptions},
    lifecycle::arrivals::{self, Arrivals},
    traffic::counters::TrafficMap,
};

/// One namespace at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Raw {
    pub name: Option<String>,
    pub container: Option<String>,
    pub procs: usize,
    /// rx bytes, tx bytes, rx packets, tx packets summed over its counted interfaces; `None` when the agent
    /// counts none of its interfaces.
    pub traffic: Option<[u64; 4]>,
    /// Processes that got into it so far (the agent's count), and the latest one (`COMM[PID]`).
    pub arrivals: u64,
    pub who: Option<String>,
}

/// Every namespace at one instant.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub namespaces: BTreeMap<u32, Raw>,
    /// Whether the agent's counters could be read at all.
    pub counted: bool,
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub inode: u32,
    pub name: String,
    pub container: String,
    pub procs: usize,
    /// Per second: rx bytes, tx bytes, rx packets, tx packets; `None` for a namespace without counters.
    pub rates: Option<[f64; 4]>,
    pub arrivals_per_second: f64,
    pub who: String,
}

/// What the table is sorted by (`s` cycles through them in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    RxBytes,
    TxBytes,
    RxPackets,
    TxPackets,
    Arrivals,
    Procs,
    Name,
    Inode,
}

impl SortKey {
    pub const ALL: [SortKey; 8] = [
        SortKey::RxBytes,
        SortKey::TxBytes,
        SortKey::RxPackets,
        SortKey::TxPackets,
        SortKey::Arrivals,
        SortKey::Procs,
        SortKey::Name,
        SortKey::Inode,
    ];

    /// The column header it sorts by.
    pub fn column(self) -> &'static str {
        match self {
            SortKey::RxBytes => "RX/s",
            SortKey::TxBytes => "TX/s",
            SortKey::RxPackets => "RXPKT/s",
            SortKey::TxPackets => "TXPKT/s",
            SortKey::Arrivals => "IN/s",
            SortKey::Procs => "PROCS",
            SortKey::Name => "NAME",
            SortKey::Inode => "INODE",
        }
    }

    /// `--sort`'s names.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.to_ascii_lowercase();
        Some(match value.as_str() {
            "rx" | "rx-bytes" => SortKey::RxBytes,
            "tx" | "tx-bytes" => SortKey::TxBytes,
            "rx-packets" => SortKey::RxPackets,
            "tx-packets" => SortKey::TxPackets,
            "in" | "arrivals" => SortKey::Arrivals,
            "procs" => SortKey::Procs,
            "name" => SortKey::Name,
            "inode" => SortKey::Inode,
            _ => return None,
        })
    }

    pub fn next(self) -> Self {
        let at = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(at + 1) % Self::ALL.len()]
    }
}

/// Reads samples: the inventory (no fd walk: a refresh must stay cheap), the pinned counters of the agent of
/// `pin_dir` (opened again while there are none: an agent may start later) and the arrivals file.
pub struct Sampler {
    pin_dir: PathBuf,
    traffic: Option<TrafficMap>,
    namer: Namer,
}

impl Sampler {
    pub fn new(pin_dir: PathBuf) -> Self {
        Self { pin_dir, traffic: None, namer: Namer::new() }
    }

    pub fn sample(&mut self) -> Sample {
        let inventory = Inventory::scan(&ScanOptions::default()).unwrap_or_default();
        if self.traffic.is_none() {
            self.traffic = TrafficMap::open(&self.pin_dir).ok();
        }
        let totals = self.traffic.as_ref().and_then(|map| map.totals().ok());
        let counted = totals.is_some();
        let mut traffic: BTreeMap<u32, [u64; 4]> = BTreeMap::new();
        for (key, t) in totals.into_iter().flatten() {
            let sum = traffic.entry(key.netns).or_default();
            for (slot, value) in sum.iter_mut().zip([t.bytes[0], t.bytes[1], t.packets[0], t.packets[1]]) {
                *slot += value;
            }
        }
        let arrivals = Arrivals::load(std::path::Path::new(arrivals::STATE_FILE));
        let namespaces = inventory
            .namespaces
            .values()
            .map(|ns| {
                let (name, container) = self.namer.describe(ns);
                let record = arrivals.namespaces.get(&ns.inode);
                let raw = Raw {
                    name,
                    container: container.map(|c| c.to_string()),
                    procs: ns.pids.len(),
                    traffic: traffic.get(&ns.inode).copied(),
                    arrivals: record.map_or(0, |r| r.total()),
                    who: record.and_then(|r| r.last.back()).map(|a| format!("{}[{}]", a.comm, a.pid)),
                };
                (ns.inode, raw)
            })
            .collect();
        Sample { at: Instant::now(), namespaces, counted }
    }
}

/// Rates between two samples, for the namespaces of `now` (one new since `before` gets rates of 0 until the
/// next sample). A counter that went down (an inode reused by a new namespace) counts as no traffic.
pub fn rates(before: &Sample, now: &Sample) -> Vec<Row> {
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    now.namespaces
        .iter()
        .map(|(&inode, raw)| {
            let old = before.namespaces.get(&inode);
            let per_second =
                |new: u64, old: Option<u64>| old.map_or(0.0, |old| new.saturating_sub(old) as f64 / seconds);
            let rates = raw.traffic.map(|traffic| {
                let old = old.and_then(|o| o.traffic);
                std::array::from_fn(|i| per_second(traffic[i], old.map(|o| o[i])))
            });
            Row {
                inode,
                name: raw.name.clone().unwrap_or_else(|| "-".to_owned()),
                container: raw.container.clone().unwrap_or_else(|| "-".to_owned()),
                procs: raw.procs,
                rates,
                arrivals_per_second: per_second(raw.arrivals, old.map(|o| o.arrivals)),
                who: raw.who.clone().unwrap_or_else(|| "-".to_owned()),
            }
        })
        .collect()
}

/// Keeps the rows whose inode, name or container contains `filter` (case-insensitive) and sorts them by `key`:
/// rates and counts largest first, names and inodes in ascending order, `reverse` flipping either.
pub fn arrange(rows: &mut Vec<Row>, key: SortKey, reverse: bool, filter: &str) {
    if !filter.is_empty() {
        let filter = filter.to_ascii_lowercase();
        rows.retain(|row| {
            row.inode.to_string().contains(&filter)
                || row.name.to_ascii_lowercase().contains(&filter)
                || row.container.to_ascii_lowercase().contains(&filter)
        });
    }
    let rate = |row: &Row, i: usize| row.rates.map_or(-1.0, |r| r[i]);
    rows.sort_by(|a, b| {
        let order = match key {
            SortKey::RxBytes => rate(b, 0).total_cmp(&rate(a, 0)),
            SortKey::TxBytes => rate(b, 1).total_cmp(&rate(a, 1)),
            SortKey::RxPackets => rate(b, 2).total_cmp(&rate(a, 2)),
            SortKey::TxPackets => rate(b, 3).total_cmp(&rate(a, 3)),
            SortKey::Arrivals => b.arrivals_per_second.total_cmp(&a.arrivals_per_second),
            SortKey::Procs => b.procs.cmp(&a.procs),
            SortKey::Name => a.name.cmp(&b.name),
            SortKey::Inode => a.inode.cmp(&b.inode),
        };
        let order = order.then(a.inode.cmp(&b.inode));
        if reverse { order.reverse() } else { order }
    });
}

/// `1.2K`, `3.4M`: a rate in a narrow column.
pub fn human(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}K", v / 1e3),
        v => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample(at: Instant, entries: &[(u32, &str, Option<[u64; 4]>, u64)]) -> Sample {
        let namespaces = entries
            .iter()
            .map(|&(inode, name, traffic, arrivals)| {
                (inode, Raw { name: Some(name.into()), traffic, arrivals, ..Raw::default() })
            })
            .collect();
        Sample { at, namespaces, counted: true }
    }

    #[test]
    fn rates_are_per_second_between_samples_and_never_negative() {
        let t0 = Instant::now();
        let before = sample(t0, &[(1, "a", Some([100, 0, 10, 0]), 0), (2, "b", Some([5000, 0, 0, 0]), 3)]);
        let now = sample(
            t0 + Duration::from_secs(2),
            &[(1, "a", Some([300, 40, 14, 2]), 0), (2, "b", Some([10, 0, 0, 0]), 7), (3, "new", None, 1)],
        );
        let rows = rates(&before, &now);
        assert_eq!(rows[0].rates, Some([100.0, 20.0, 2.0, 1.0]));
        assert_eq!(rows[1].rates, Some([0.0; 4]), "a counter that went down is no traffic");
        assert_eq!(rows[1].arrivals_per_second, 2.0);
        assert_eq!(rows[2].rates, None, "no counters");
        assert_eq!(rows[2].arrivals_per_second, 0.0, "new: nothing to compare with yet");
    }

    #[test]
    fn rows_are_filtered_and_sorted_as_asked() {
        let t0 = Instant::now();
        let before = sample(t0, &[(1, "web", Some([0; 4]), 0), (2, "db", Some([0; 4]), 0), (3, "cache", None, 0)]);
        let now = sample(
            t0 + Duration::from_secs(1),
            &[(1, "web", Some([10, 0, 0, 0]), 0), (2, "db", Some([500, 0, 0, 0]), 0), (3, "cache", None, 0)],
        );
        let mut rows = rates(&before, &now);
        arrange(&mut rows, SortKey::RxBytes, false, "");
        assert_eq!(rows.iter().map(|r| r.inode).collect::<Vec<_>>(), [2, 1, 3], "largest first, uncounted last");
        arrange(&mut rows, SortKey::Name, false, "");
        assert_eq!(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["cache", "db", "web"]);
        arrange(&mut rows, SortKey::Name, true, "");
        assert_eq!(rows[0].name, "web");
        arrange(&mut rows, SortKey::Inode, false, "WE");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "web");
        assert_eq!(SortKey::Inode.next(), SortKey::RxBytes);
        assert_eq!(SortKey::parse("RX"), Some(SortKey::RxBytes));
        assert_eq!(human(1500.0), "1.5K");
        assert_eq!(human(42.0), "42");
    }
}
