//! The Markdown table: one row per figure, one column per runtime, and Cortex/peer ratios.

use std::fmt::Write as _;

/// Which direction is better for a figure.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Better {
    Higher,
    Lower,
}

pub(crate) struct Row {
    name: String,
    better: Better,
    vals: [Option<f64>; 4],
    fmt: fn(f64) -> String,
}

impl Row {
    pub(crate) fn new(
        name: String,
        better: Better,
        vals: [Option<f64>; 4],
        fmt: fn(f64) -> String,
    ) -> Self {
        Self {
            name,
            better,
            vals,
            fmt,
        }
    }
}

#[derive(Default)]
pub(crate) struct Table {
    rows: Vec<Row>,
}

const PEERS: [&str; 3] = ["kameo", "ractor", "actix"];

impl Table {
    pub(crate) fn push(&mut self, r: Row) {
        self.rows.push(r);
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("| figure | better | Cortex | kameo 0.22 | ractor 0.16 | actix 0.13 |");
        for p in PEERS {
            let _ = write!(out, " Cortex/{p} |");
        }
        out.push_str(" Cortex vs best peer |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let cell = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), r.fmt);
            let _ = write!(
                out,
                "| {} | {} |",
                r.name,
                match r.better {
                    Better::Higher => "higher",
                    Better::Lower => "lower",
                }
            );
            for v in r.vals {
                let _ = write!(out, " {} |", cell(v));
            }
            let cortex = r.vals[0];
            for v in &r.vals[1..] {
                let ratio = match (cortex, v) {
                    (Some(c), Some(p)) if *p != 0.0 => format!("{:.2}", c / p),
                    _ => "n/a".to_owned(),
                };
                let _ = write!(out, " {ratio} |");
            }
            // How many times better than the best peer (>1: Cortex wins).
            let peers = r.vals[1..].iter().flatten().copied();
            let best = match r.better {
                Better::Higher => {
                    peers.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v))))
                }
                Better::Lower => {
                    peers.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.min(v))))
                }
            };
            let vs = match (cortex, best) {
                (Some(c), Some(b)) if c != 0.0 && b != 0.0 => match r.better {
                    Better::Higher => format!("{:.2}x", c / b),
                    Better::Lower => format!("{:.2}x", b / c),
                },
                _ => "n/a".to_owned(),
            };
            let _ = writeln!(out, " {vs} |");
        }
        out
    }
}

pub(crate) fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

pub(crate) fn micros(secs: f64) -> String {
    format!("{:.2} µs", secs * 1e6)
}

pub(crate) fn percent(v: f64) -> String {
    format!("{v:.2}%")
}

pub(crate) fn bytes(v: f64) -> String {
    format!("{v:.0} B")
}

pub(crate) fn plain(v: f64) -> String {
    format!("{v:.2}")
}
