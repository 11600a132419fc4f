use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};

use super::*;

/// The string literals passed to `name(` in `src`, e.g. every id in `$('...')`.
fn literal_args(src: &str, call: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for quote in ['\'', '"'] {
        let needle = format!("{call}({quote}");
        let mut rest = src;
        while let Some(i) = rest.find(&needle) {
            rest = &rest[i + needle.len()..];
            if let Some(end) = rest.find(quote) {
                out.insert(rest[..end].to_string());
            }
        }
    }
    out
}

#[test]
fn every_element_the_script_uses_is_on_the_page() {
    let mut ids = literal_args(SCRIPT, "$");
    for section in literal_args(SCRIPT, "showNa") {
        ids.insert(format!("{section}-na"));
    }
    // The ids the node card fills in a loop.
    let fields_at = SCRIPT
        .find("const nodeFields")
        .expect("node card field list");
    let fields = &SCRIPT[fields_at..fields_at + SCRIPT[fields_at..].find(']').unwrap()];
    for id in fields.split('\'').skip(1).step_by(2) {
        ids.insert(id.to_string());
    }
    assert!(ids.len() > 20, "found the ids: {ids:?}");
    for id in ids {
        assert!(
            PAGE.contains(&format!("id=\"{id}\"")),
            "app.js uses #{id}, index.html lacks it"
        );
    }
}

#[test]
fn page_loads_only_its_own_assets_and_nothing_inline() {
    assert!(PAGE.contains(&format!("src=\"{SCRIPT_PATH}\"")));
    assert!(PAGE.contains(&format!("href=\"{STYLE_PATH}\"")));
    for text in [PAGE, SCRIPT, STYLE] {
        for external in [
            "src=\"http",
            "href=\"http",
            "url(http",
            "@import",
            "//fonts.",
            "cdn",
        ] {
            assert!(!text.contains(external), "external reference {external:?}");
        }
    }
    // The CSP forbids inline code: every <script> has a src, and no style attributes or blocks.
    assert_eq!(
        PAGE.matches("<script").count(),
        PAGE.matches("<script src=").count()
    );
    assert!(!PAGE.contains(" style=") && !PAGE.contains("<style"));
    assert!(
        !SCRIPT.contains("innerHTML"),
        "network data goes in as text only"
    );
}

#[test]
fn assets_have_content_types() {
    assert_eq!(asset(SCRIPT_PATH).map(|a| a.body), Some(script()));
    assert_eq!(asset(STYLE_PATH).map(|a| a.body), Some(stylesheet()));
    assert_eq!(
        asset(STYLE_PATH).map(|a| a.content_type),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(asset("/").map(|a| a.body), Some(page()));
    assert_eq!(asset("/dashboard.js"), None);
}

/// Runs `src` in Node.js and returns its standard output.
fn run_node(src: &str) -> String {
    let spawned = Command::new("node")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => panic!(
            "Node.js is needed to check the dashboard script but could not be started ({e}); \
             install the machine's Node.js (`node` on PATH)"
        ),
    };
    let mut stdin = child.stdin.take().expect("stdin was piped");
    stdin.write_all(src.as_bytes()).expect("node reads stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("node runs to completion");
    assert!(
        out.status.success(),
        "node failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("node prints UTF-8")
}

#[test]
fn script_parses_the_nodes_own_metrics() {
    let metrics = crate::metrics::NodeMetrics::new("node-\"a\"");
    metrics.message_received("order", true);
    metrics.message_received("order", true);
    metrics.message_sent("cart", false);
    metrics.record_ask("order", true, std::time::Duration::from_millis(1));
    let text = metrics.encode();
    // Load app.js with just enough of a browser around it to register its helpers, then
    // parse the exposition the Rust side produced.
    let harness = format!(
        "const vm = require('vm');\n\
         const ctx = {{ window: {{}}, document: {{ readyState: 'loading', addEventListener() {{}} }} }};\n\
         vm.createContext(ctx);\n\
         vm.runInContext({script}, ctx);\n\
         const samples = ctx.window.cortexDashboard.parseMetrics({text});\n\
         const pick = (name, labels) => samples.filter(s => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).map(s => s.value);\n\
         console.log(JSON.stringify({{\n\
           received: pick('cortex_messages_received_total', {{kind: 'order', path: 'remote'}}),\n\
           sent: pick('cortex_messages_sent_total', {{kind: 'cart'}}),\n\
           inf: pick('cortex_ask_duration_seconds_bucket', {{kind: 'order', le: '+Inf'}}),\n\
           node: samples[0].labels.node,\n\
           all: samples.length,\n\
         }}));",
        script = serde_json::to_string(SCRIPT).unwrap(),
        text = serde_json::to_string(&text).unwrap(),
    );
    let out: serde_json::Value = serde_json::from_str(run_node(&harness).trim()).unwrap();
    assert_eq!(out["received"], serde_json::json!([2]));
    assert_eq!(out["sent"], serde_json::json!([1]));
    assert_eq!(out["inf"], serde_json::json!([1]));
    assert_eq!(
        out["node"], "node-\"a\"",
        "escaped label values come back intact"
    );
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(out["all"], lines, "every sample line parses");
}
