//! The `cortex` CLI against a real local cluster: every command, `--json` output for
//! scripts, human tables, and the documented exit codes (0 ok, 1 operation failed,
//! 2 usage, 3 unreachable, 4 timeout).

mod client_common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use client_common::{Cluster, cli_bin};
use cortex_protocol::ActorId;
use serde_json::Value;

struct Cli<'a> {
    cluster: &'a Cluster,
}

impl Cli<'_> {
    fn cmd(&self, node: usize) -> Command {
        self.cmd_as(node, "app")
    }

    /// TLS flags only: no --node, no --seed.
    fn bare(&self) -> Command {
        let mut cmd = Command::new(cli_bin());
        cmd.arg("--tls-dir")
            .arg(self.cluster.ca_dir())
            .args(["--cert-name", "app"]);
        cmd
    }

    fn cmd_as(&self, node: usize, cert_name: &str) -> Command {
        let c = self.cluster;
        let mut cmd = Command::new(cli_bin());
        cmd.arg("--node")
            .arg(format!("http://{}", c.nodes[node].http))
            .arg("--seed")
            .arg(c.nodes[node].quic.to_string())
            .arg("--tls-dir")
            .arg(c.ca_dir())
            .args(["--cert-name", cert_name]);
        cmd
    }

    fn run(&self, node: usize, args: &[&str]) -> Output {
        self.cmd(node).args(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, node: usize, args: &[&str]) -> String {
        let out = self.run(node, args);
        assert!(
            out.status.success(),
            "cortex {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, node: usize, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(node, &all)).unwrap()
    }

    fn code(&self, node: usize, args: &[&str]) -> (i32, String) {
        let out = self.run(node, args);
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_against_a_local_cluster() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_converged(3, Duration::from_secs(60)).await;
    let cli = Cli { cluster: &cluster };

    // members
    let members = cli.json(0, &["members"]);
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["state"] == "alive"));
    let table = cli.ok(1, &["members"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("n1 *") && table.contains("alive"), "{table}");

    // ring: shares, and the owner of one id as both the node and the SDK compute it
    let ring = cli.json(0, &["ring"]);
    let shares = ring["shares"].as_array().unwrap();
    assert_eq!(shares.len(), 3);
    let total: f64 = shares.iter().map(|s| s["share"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
    assert!(cli.ok(0, &["ring"]).contains("SHARE"));
    let client = cluster.client(0).await;
    client
        .wait_for_topology(Duration::from_secs(10), |v| v.owners().len() == 3)
        .await
        .unwrap();
    let id: ActorId = "counter/cli-1".parse().unwrap();
    let owner = client.owner_of(&id).unwrap();
    let located = cli.json(2, &["ring", "counter/cli-1"]);
    assert_eq!(located["owner"], owner.to_string());

    // ask and tell with raw bincode over QUIC: Incr and Get carry no fields; a u64 reply
    // of 1 is the single varint byte 01.
    let out = cli.ok(
        0,
        &["ask", "counter/cli-1", "counter.Incr", "--payload-hex="],
    );
    assert_eq!(out.trim(), "counter.Incr.Reply 01");
    assert_eq!(
        cli.ok(
            1,
            &["tell", "counter/cli-1", "counter.Incr", "--payload-hex="]
        )
        .trim(),
        "sent"
    );
    let got = cli.json(
        2,
        &["ask", "counter/cli-1", "counter.Get", "--payload-hex="],
    );
    assert_eq!(got["payload_hex"], "02", "{got}");

    // ask and tell with JSON through the admin endpoint (proxied to the owner)
    let r = cli.json(1, &["ask", "account/alice", "bank.Deposit", "5"]);
    assert_eq!(r["reply"], 5, "{r}");
    cli.ok(2, &["tell", "account/alice", "bank.Deposit", "10"]);
    let balance = cli.ok(0, &["ask", "account/alice", "bank.Balance", "null"]);
    assert_eq!(balance.trim(), "15");
    let w = cli.json(0, &["ask", "account/alice", "bank.Withdraw", "100"]);
    assert!(
        w["reply"]["Err"].as_str().unwrap().contains("insufficient"),
        "{w}"
    );

    // activations of the owner include the id
    let acts = cli.json(0, &["activations", owner.name()]);
    assert!(
        acts.as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == "counter/cli-1"),
        "{acts}"
    );
    assert!(
        cli.ok(0, &["activations", owner.name()])
            .contains("counter/cli-1")
    );

    // publish and subscribe (raw): the subscriber prints one JSON line per message
    let mut sub = cli
        .cmd(0)
        .args([
            "--json",
            "subscribe",
            "cli-topic",
            "--count",
            "1",
            "--for",
            "30s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        // Deposit(5) in bincode is the single byte 05.
        cli.ok(
            1,
            &[
                "publish",
                "cli-topic",
                "bank.Deposit",
                "--payload-hex",
                "05",
            ],
        );
        if let Some(s) = sub.try_wait().unwrap() {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery to the CLI subscriber"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success());
    let out = sub.wait_with_output().unwrap();
    let line: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["message"], "bank.Deposit");
    assert_eq!(line["payload_hex"], "05");

    // publish JSON: node 1 encodes it with the registered type; the subscriber (on node 0)
    // gets the same wire bytes as from a raw publish.
    let mut sub = cli
        .cmd(0)
        .args([
            "--json",
            "subscribe",
            "cli-json",
            "--count",
            "1",
            "--for",
            "30s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let out = cli.json(1, &["publish", "cli-json", "bank.Deposit", "6"]);
        assert_eq!(out["accepted"], true, "{out}");
        if let Some(s) = sub.try_wait().unwrap() {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no JSON-published delivery to the CLI subscriber"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success());
    let out = sub.wait_with_output().unwrap();
    let line: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["message"], "bank.Deposit");
    assert_eq!(line["payload_hex"], "06");
    let (code, err) = cli.code(1, &["publish", "cli-json", "bank.Nope", "6"]);
    assert_eq!(code, 1, "an unknown message is an operation failure: {err}");
    assert!(err.contains("bank.Nope"), "{err}");

    // exit codes
    let (code, err) = cli.code(0, &["ask", "nokind/x", "counter.Get", "--payload-hex="]);
    assert_eq!(code, 1, "unknown kind is an operation failure: {err}");
    assert!(err.contains("unknown actor kind"), "{err}");
    let (code, err) = cli.code(0, &["ask", "account/bob", "bank.Nope", "null"]);
    assert_eq!(code, 1, "{err}");
    let (code, _) = cli.code(0, &["ring", "not-an-id"]);
    assert_eq!(code, 2, "usage");
    let (code, _) = cli.code(0, &["ask", "counter/x", "counter.Get"]);
    assert_eq!(code, 2, "no payload is a usage error");
    let out = cli
        .cmd_as(0, "nobody")
        .args(["ask", "counter/x", "counter.Get", "--payload-hex="])
        .output()
        .unwrap();
    let (code, err) = (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(code, 2, "missing client certificate: {err}");
    assert!(err.contains("certs issue nobody --client"), "{err}");
    let out = cli
        .bare()
        .args(["--node", "http://127.0.0.1:1", "members"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "unreachable node");
    let out = cli
        .bare()
        .args(["--seed", "127.0.0.1:1", "--connect-timeout", "1s"])
        .args(["ask", "counter/x", "counter.Get", "--payload-hex="])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "no seed answers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, err) = cli.code(
        0,
        &[
            "--timeout",
            "1us",
            "ask",
            "counter/x",
            "counter.Get",
            "--payload-hex=",
        ],
    );
    assert_eq!(code, 4, "timeout: {err}");
    client.shutdown().await;
}
