use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

/// Records at least one value in every family.
fn busy_metrics() -> NodeMetrics {
    let m = NodeMetrics::new("node-a");
    for (kind, remote) in [
        ("order", false),
        ("order", true),
        ("cart", true),
        (SYSTEM, false),
    ] {
        m.message_sent(kind, remote);
        m.message_received(kind, remote);
        m.message_forwarded(kind, remote);
        m.message_dropped(kind, remote);
    }
    m.record_ask("order", true, Duration::from_micros(40));
    m.record_ask("order", false, Duration::from_secs(3));
    m.record_ask("order", true, Duration::from_secs(60));
    m.set_mailbox_depth("order", 7);
    m.add_mailbox_depth("cart", 2);
    m.actor_activated("order");
    m.actor_activated("order");
    m.actor_passivated("order");
    m.set_live_actors("cart", 5);
    m.set_membership_size(3);
    m.membership_change(MembershipEvent::Joined);
    m.membership_change(MembershipEvent::Down);
    m.set_peer_rtt("node-b", Duration::from_micros(420));
    m.peer_bytes_sent("node-b", 1000);
    m.peer_bytes_received("node-b", 2000);
    m.peer_lost_packets("node-b", 3);
    m.gossip_accepted();
    m.gossip_rejected("bad_tag");
    m.gossip_rejected("made-up reason");
    m.pubsub_delivered(4);
    m.pubsub_dropped(1);
    m
}

fn line_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn encodes_every_family_with_expected_names() {
    let text = busy_metrics().encode();
    let want = [
        (
            r#"cortex_messages_sent_total{node="node-a",kind="order",path="local"}"#,
            1.0,
        ),
        (
            r#"cortex_messages_received_total{node="node-a",kind="cart",path="remote"}"#,
            1.0,
        ),
        (
            r#"cortex_messages_forwarded_total{node="node-a",kind="system",path="local"}"#,
            1.0,
        ),
        (
            r#"cortex_messages_dropped_total{node="node-a",kind="order",path="remote"}"#,
            1.0,
        ),
        (r#"cortex_mailbox_depth{node="node-a",kind="order"}"#, 7.0),
        (r#"cortex_mailbox_depth{node="node-a",kind="cart"}"#, 2.0),
        (
            r#"cortex_ask_duration_seconds_bucket{node="node-a",kind="order",outcome="ok",le="5e-05"}"#,
            1.0,
        ),
        (
            r#"cortex_ask_duration_seconds_bucket{node="node-a",kind="order",outcome="ok",le="10"}"#,
            1.0,
        ),
        (
            r#"cortex_ask_duration_seconds_bucket{node="node-a",kind="order",outcome="ok",le="+Inf"}"#,
            2.0,
        ),
        (
            r#"cortex_ask_duration_seconds_count{node="node-a",kind="order",outcome="error"}"#,
            1.0,
        ),
        (
            r#"cortex_activations_total{node="node-a",kind="order"}"#,
            2.0,
        ),
        (
            r#"cortex_passivations_total{node="node-a",kind="order"}"#,
            1.0,
        ),
        (r#"cortex_live_actors{node="node-a",kind="order"}"#, 1.0),
        (r#"cortex_live_actors{node="node-a",kind="cart"}"#, 5.0),
        (r#"cortex_membership_size{node="node-a"}"#, 3.0),
        (
            r#"cortex_membership_changes_total{node="node-a",event="joined"}"#,
            1.0,
        ),
        (
            r#"cortex_membership_changes_total{node="node-a",event="left"}"#,
            0.0,
        ),
        (
            r#"cortex_peer_rtt_seconds{node="node-a",peer="node-b"}"#,
            0.00042,
        ),
        (
            r#"cortex_peer_sent_bytes_total{node="node-a",peer="node-b"}"#,
            1000.0,
        ),
        (
            r#"cortex_peer_received_bytes_total{node="node-a",peer="node-b"}"#,
            2000.0,
        ),
        (
            r#"cortex_peer_lost_packets_total{node="node-a",peer="node-b"}"#,
            3.0,
        ),
        (
            r#"cortex_gossip_datagrams_accepted_total{node="node-a"}"#,
            1.0,
        ),
        (
            r#"cortex_gossip_datagrams_rejected_total{node="node-a",reason="bad_tag"}"#,
            1.0,
        ),
        (
            r#"cortex_gossip_datagrams_rejected_total{node="node-a",reason="other"}"#,
            1.0,
        ),
        (r#"cortex_pubsub_delivered_total{node="node-a"}"#, 4.0),
        (r#"cortex_pubsub_dropped_total{node="node-a"}"#, 1.0),
    ];
    for (series, value) in want {
        assert_eq!(
            line_value(&text, series),
            Some(value),
            "{series} in:\n{text}"
        );
    }
    assert!(
        text.contains(r#"cortex_build_info{node="node-a",version=""#),
        "{text}"
    );
    let rss = line_value(&text, r#"process_resident_memory_bytes{node="node-a"}"#)
        .expect("resident memory is exported on Linux");
    assert!(rss > 0.0);
    assert!(line_value(&text, r#"process_start_time_seconds{node="node-a"}"#).is_some());
    assert!(line_value(&text, r#"process_cpu_seconds_total{node="node-a"}"#).is_some());
    for family in [
        "cortex_messages_sent_total",
        "cortex_ask_duration_seconds",
        "cortex_peer_rtt_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "HELP for {family}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "TYPE for {family}"
        );
    }
}

#[test]
fn kind_labels_are_capped() {
    let m = NodeMetrics::new("n");
    assert!(m.register_kind("order"));
    // "other", "system" and "order" are in; fill the rest of the cap.
    for i in 0..MAX_KIND_LABELS - 3 {
        assert!(m.register_kind(&format!("k{i}")), "k{i} fits under the cap");
    }
    assert!(!m.register_kind("one-too-many"));
    m.message_received("one-too-many", false);
    m.message_received("not a kind!", false);
    m.message_received("order", false);
    let text = m.encode();
    assert_eq!(
        line_value(
            &text,
            r#"cortex_messages_received_total{node="n",kind="other",path="local"}"#
        ),
        Some(2.0)
    );
    assert!(!text.contains("one-too-many"));
    assert_eq!(m.kind("one-too-many").kind(), OTHER);
    assert_eq!(m.kind("system").kind(), SYSTEM, "system is always admitted");
}

#[test]
fn peer_labels_are_capped_and_forgettable() {
    let m = NodeMetrics::new("n");
    for i in 0..MAX_PEER_LABELS - 1 {
        m.peer_bytes_sent(&format!("p{i}"), 1);
    }
    m.peer_bytes_sent("late", 5);
    let text = m.encode();
    assert_eq!(
        line_value(
            &text,
            r#"cortex_peer_sent_bytes_total{node="n",peer="other"}"#
        ),
        Some(5.0)
    );
    m.forget_peer("p0");
    m.set_peer_rtt("late", Duration::from_millis(1));
    let text = m.encode();
    assert!(
        !text.contains(r#"peer="p0""#),
        "forgotten peer's series are gone"
    );
    assert_eq!(
        line_value(&text, r#"cortex_peer_rtt_seconds{node="n",peer="late"}"#),
        Some(0.001)
    );
}

#[test]
fn kind_handles_share_series_with_methods() {
    let m = NodeMetrics::new("n");
    let h = m.kind("order");
    h.sent(true);
    m.message_sent("order", true);
    h.activated();
    h.activated();
    h.passivated();
    h.ask(false, Duration::from_millis(3));
    h.set_mailbox_depth(4);
    h.add_mailbox_depth(-1);
    let text = m.encode();
    assert_eq!(
        line_value(
            &text,
            r#"cortex_messages_sent_total{node="n",kind="order",path="remote"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        line_value(
            &text,
            r#"cortex_ask_duration_seconds_bucket{node="n",kind="order",outcome="error",le="0.005"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        line_value(&text, r#"cortex_mailbox_depth{node="n",kind="order"}"#),
        Some(3.0)
    );
    assert_eq!(m.live_actors(), vec![("order".to_string(), 1)]);
}

#[test]
fn gossip_totals_sync_monotonically() {
    let m = NodeMetrics::new("n");
    m.sync_gossip_totals(10, [("stale", 2), ("x", 1), ("y", 2)]);
    m.sync_gossip_totals(7, [("stale", 5)]);
    let text = m.encode();
    assert_eq!(
        line_value(&text, r#"cortex_gossip_datagrams_accepted_total{node="n"}"#),
        Some(10.0)
    );
    assert_eq!(
        line_value(
            &text,
            r#"cortex_gossip_datagrams_rejected_total{node="n",reason="stale"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        line_value(
            &text,
            r#"cortex_gossip_datagrams_rejected_total{node="n",reason="other"}"#
        ),
        Some(3.0)
    );
}

#[test]
fn openmetrics_has_eof_and_same_samples() {
    let m = busy_metrics();
    let (ct, om) = m.encode_for_accept(Some("application/openmetrics-text;version=1.0.0"));
    assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains(r#"cortex_messages_sent_total{node="node-a",kind="order",path="local"} 1"#)
    );
    assert!(om.contains("# UNIT cortex_ask_duration_seconds seconds"));
    let (ct, _) = m.encode_for_accept(Some("text/plain;version=0.0.4"));
    assert_eq!(ct, TEXT_CONTENT_TYPE);
}

/// Runs `promtool check metrics` on `text`; returns (success, combined output).
fn promtool_check(text: &str) -> (bool, String) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is needed to lint the metrics exposition but could not be started ({e}); \
             run scripts/install-test-deps.sh (it installs the Debian package `prometheus`, \
             which provides /usr/bin/promtool)"
        ),
    };
    let mut stdin = child.stdin.take().expect("stdin was piped");
    stdin
        .write_all(text.as_bytes())
        .expect("promtool reads stdin");
    drop(stdin);
    let out = child
        .wait_with_output()
        .expect("promtool runs to completion");
    let mut all = String::from_utf8_lossy(&out.stdout).into_owned();
    all.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), all)
}

#[test]
fn promtool_accepts_prometheus_text_without_lint_warnings() {
    let text = busy_metrics().encode();
    let (ok, output) = promtool_check(&text);
    assert!(
        ok && output.trim().is_empty(),
        "promtool check metrics:\n{output}\n---\n{text}"
    );
}

#[test]
fn promtool_rejects_a_bad_exposition() {
    // Proves the check above is real: promtool does flag a lint problem.
    let (ok, output) =
        promtool_check("# HELP foo_seconds x\n# TYPE foo_seconds counter\nfoo_seconds 1\n");
    assert!(
        !ok || !output.trim().is_empty(),
        "promtool should complain about a counter without _total"
    );
}

#[test]
fn registered_kinds_record_into_the_same_series_as_the_labelled_path() {
    let m = NodeMetrics::new("n");
    // Past the lock-free handles' slots too: those kinds take the labelled path.
    for i in 0..40 {
        assert!(m.register_kind(&format!("k{i}")));
    }
    for kind in ["k0", "k39", "unregistered"] {
        m.message_received(kind, true);
        m.kind(kind).received(true);
        m.record_ask(kind, true, Duration::from_millis(1));
    }
    let text = m.encode();
    for kind in ["k0", "k39", "unregistered"] {
        assert_eq!(
            line_value(
                &text,
                &format!(
                    r#"cortex_messages_received_total{{node="n",kind="{kind}",path="remote"}}"#
                )
            ),
            Some(2.0),
            "{kind}"
        );
        assert_eq!(
            line_value(
                &text,
                &format!(
                    r#"cortex_ask_duration_seconds_count{{node="n",kind="{kind}",outcome="ok"}}"#
                )
            ),
            Some(1.0),
            "{kind}"
        );
    }
}

/// `cortex_*` names in `text`, skipping Rust paths such as `cortex_node::metrics`.
fn cortex_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while let Some(at) = text[i..].find("cortex_") {
        let start = i + at;
        let mut end = start + "cortex_".len();
        while end < b.len() && word(b[end]) {
            end += 1;
        }
        let standalone = start == 0 || !word(b[start - 1]);
        if standalone && !text[end..].starts_with("::") {
            out.insert(text[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// The metrics page documents every family the node exports, and neither it nor the Grafana
/// dashboard names a series the node does not export (a renamed metric breaks both silently).
#[test]
fn docs_and_grafana_dashboard_match_the_exported_metrics() {
    let text = busy_metrics().encode();
    let samples: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| n.starts_with("cortex_"))
        .collect();
    let exported = |name: &str| {
        samples.contains(name)
            || ["_bucket", "_count", "_sum"]
                .iter()
                .any(|s| samples.contains(format!("{name}{s}").as_str()))
    };
    let docs = include_str!("../../../docs/metrics.md");
    let grafana = include_str!("../../../k8s/grafana-dashboard.json");
    for (file, body) in [
        ("docs/metrics.md", docs),
        ("k8s/grafana-dashboard.json", grafana),
    ] {
        for name in cortex_names(body) {
            assert!(
                exported(&name),
                "{file} names {name}, which the node does not export"
            );
        }
    }
    let documented = cortex_names(docs);
    for sample in &samples {
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| sample.strip_suffix(s))
            .filter(|f| documented.contains(*f))
            .unwrap_or(sample);
        assert!(
            documented.contains(family),
            "{family} is exported but not in docs/metrics.md"
        );
    }
}
