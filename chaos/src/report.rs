//! The one-screen summary and `report.html`: throughput, latency and membership size over
//! time, fault windows shaded, drawn with `plotters` as inline SVG (no network needed to
//! view it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::ChaosError;
use crate::check::Verdict;
use crate::history::{Outcome, Snapshot};
use crate::run::RunOutcome;
use crate::scenario::Scenario;

/// The text printed at the end of a run.
pub fn summary_text(
    s: &Scenario,
    topo: &str,
    h: &Snapshot,
    verdicts: &[Verdict],
    short: bool,
) -> String {
    let mut o = String::new();
    let secs = (h.end_us.saturating_sub(h.start_us)) as f64 / 1e6;
    let _ = writeln!(
        o,
        "scenario {} ({} nodes, {:.0} s{}, {topo})",
        s.name,
        s.nodes,
        secs,
        if short { ", short" } else { "" }
    );
    let _ = writeln!(o, "faults:");
    if h.faults.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for f in &h.faults {
        let at = f.start_us.saturating_sub(h.start_us) as f64 / 1e6;
        let dur = f.end_us.saturating_sub(f.start_us) as f64 / 1e6;
        let skipped = f
            .skipped
            .as_deref()
            .map(|x| format!("  SKIPPED: {x}"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  +{at:6.1}s {:<18} {:<28} {dur:5.1}s{skipped}",
            f.kind, f.detail
        );
    }
    let mut by_op: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut by_err: BTreeMap<&str, u64> = BTreeMap::new();
    for op in &h.ops {
        let e = by_op.entry(op.op.as_str()).or_default();
        match &op.outcome {
            Outcome::Ok { .. } => e.0 += 1,
            Outcome::Err { class, .. } => {
                e.1 += 1;
                *by_err.entry(class.as_str()).or_default() += 1;
            }
        }
    }
    let total: u64 = by_op.values().map(|(a, b)| a + b).sum();
    let _ = writeln!(o, "ops: {total} ({:.0}/s)", total as f64 / secs.max(0.001));
    for (op, (ok, err)) in &by_op {
        let _ = writeln!(o, "  {op:<6} ok {ok:>7}  failed {err:>6}");
    }
    if !by_err.is_empty() {
        let list: Vec<String> = by_err.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(o, "failures by type: {}", list.join(", "));
    }
    let _ = writeln!(o, "checkers:");
    for v in verdicts {
        let _ = writeln!(
            o,
            "  {:<4} {:<17} {}",
            match (v.passed, v.gating) {
                (true, _) => "PASS",
                (false, true) => "FAIL",
                (false, false) => "NOTE",
            },
            v.name,
            v.summary
        );
        for e in v.examples.iter().take(3) {
            let _ = writeln!(o, "         - {e}");
        }
    }
    let _ = writeln!(
        o,
        "verdict: {}",
        if verdicts.iter().all(|v| v.passed) {
            "PASS"
        } else {
            "FAIL"
        }
    );
    o
}

/// Writes `report.html`.
///
/// # Errors
/// [`ChaosError::Io`].
pub fn write_html(
    path: &Path,
    s: &Scenario,
    h: &Snapshot,
    out: &RunOutcome,
) -> Result<(), ChaosError> {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>cortex-chaos: {name}</title>\
         <style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}\
         pre{{background:#f4f4f4;padding:1em;overflow-x:auto}}\
         .pass{{color:#070}}.fail{{color:#b00}}td,th{{padding:2px 8px;text-align:left}}</style>\
         </head><body><h1>{name}</h1><p>{desc}</p>",
        name = esc(&s.name),
        desc = esc(&s.description)
    );
    let _ = write!(
        html,
        "<h2>Checkers</h2><table><tr><th></th><th>checker</th><th>result</th></tr>"
    );
    for v in &out.verdicts {
        let (c, t) = if v.passed {
            ("pass", "PASS")
        } else {
            ("fail", "FAIL")
        };
        let ex: String = v
            .examples
            .iter()
            .map(|e| format!("<br><small>{}</small>", esc(e)))
            .collect();
        let _ = write!(
            html,
            "<tr><td class=\"{c}\">{t}</td><td>{}</td><td>{}{ex}</td></tr>",
            esc(&v.name),
            esc(&v.summary)
        );
    }
    html.push_str("</table>");
    let _ = write!(html, "<h2>Throughput</h2>{}", plot_throughput(h));
    let _ = write!(html, "<h2>Latency</h2>{}", plot_latency(h));
    let _ = write!(html, "<h2>Membership size per node</h2>{}", plot_members(h));
    let _ = write!(html, "<h2>Summary</h2><pre>{}</pre>", esc(&out.summary));
    html.push_str(
        "<p>Fault windows are shaded. Raw events: <code>history.jsonl</code>.</p></body></html>",
    );
    std::fs::write(path, html).map_err(|e| ChaosError::io(path, e))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn secs(h: &Snapshot, t: u64) -> f64 {
    t.saturating_sub(h.start_us) as f64 / 1e6
}

fn span(h: &Snapshot) -> f64 {
    let last = h
        .members
        .iter()
        .map(|m| m.t_us)
        .chain([h.end_us])
        .max()
        .unwrap_or(h.end_us);
    secs(h, last).max(1.0)
}

type Series = Vec<(String, RGBColor, Vec<(f64, f64)>)>;

fn chart(h: &Snapshot, y_label: &str, series: Series) -> String {
    let mut svg = String::new();
    let x_max = span(h);
    let y_max = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0f64, f64::max)
        * 1.1;
    {
        let root = SVGBackend::with_string(&mut svg, (960, 300)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let Ok(mut c) = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        else {
            return String::new();
        };
        let _ = c
            .configure_mesh()
            .x_desc("seconds since load start")
            .y_desc(y_label)
            .draw();
        let _ = c.draw_series(h.faults.iter().filter(|f| f.skipped.is_none()).map(|f| {
            let x0 = secs(h, f.start_us);
            let x1 = secs(h, f.end_us).max(x0 + 0.3);
            Rectangle::new(
                [(x0, 0.0), (x1, y_max)],
                RGBColor(220, 60, 60).mix(0.15).filled(),
            )
        }));
        for (name, color, pts) in series {
            if let Ok(s) = c.draw_series(LineSeries::new(pts, color.stroke_width(2))) {
                s.label(name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            }
        }
        let _ = c
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw();
        let _ = root.present();
    }
    svg
}

/// Per-second buckets of completed ops.
fn buckets(h: &Snapshot) -> BTreeMap<u64, (u64, u64, Vec<u64>)> {
    let mut b: BTreeMap<u64, (u64, u64, Vec<u64>)> = BTreeMap::new();
    for o in &h.ops {
        let k = o.complete_us.saturating_sub(h.start_us) / 1_000_000;
        let e = b.entry(k).or_default();
        if o.outcome.is_ok() {
            e.0 += 1;
            e.2.push(o.complete_us.saturating_sub(o.invoke_us));
        } else {
            e.1 += 1;
        }
    }
    b
}

fn plot_throughput(h: &Snapshot) -> String {
    let b = buckets(h);
    let ok = b
        .iter()
        .map(|(k, v)| (*k as f64 + 0.5, v.0 as f64))
        .collect();
    let failed = b
        .iter()
        .map(|(k, v)| (*k as f64 + 0.5, v.1 as f64))
        .collect();
    chart(
        h,
        "ops/s",
        vec![("ok".into(), BLUE, ok), ("failed".into(), RED, failed)],
    )
}

fn plot_latency(h: &Snapshot) -> String {
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for (k, (_, _, mut lat)) in buckets(h) {
        if lat.is_empty() {
            continue;
        }
        lat.sort_unstable();
        let q = |f: f64| lat[((lat.len() - 1) as f64 * f) as usize] as f64 / 1000.0;
        p50.push((k as f64 + 0.5, q(0.5)));
        p99.push((k as f64 + 0.5, q(0.99)));
    }
    chart(
        h,
        "ms",
        vec![("p50".into(), BLUE, p50), ("p99".into(), MAGENTA, p99)],
    )
}

fn plot_members(h: &Snapshot) -> String {
    let palette = [
        BLUE,
        GREEN,
        RED,
        MAGENTA,
        CYAN,
        BLACK,
        RGBColor(200, 120, 0),
    ];
    let mut by: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for m in &h.members {
        let size = m.view.as_ref().map(|v| v.len()).unwrap_or(0) as f64;
        by.entry(m.node.as_str())
            .or_default()
            .push((secs(h, m.t_us), size));
    }
    let series = by
        .into_iter()
        .enumerate()
        .map(|(i, (n, pts))| (n.to_owned(), palette[i % palette.len()], pts))
        .collect();
    chart(h, "live members seen (0 = no answer)", series)
}
