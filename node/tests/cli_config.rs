//! The `cortex-node` command line from outside: settings precedence through the public
//! parser, `--help` coverage, and exit codes with one-line messages for bad settings.

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Duration;

use cortex_node::cli::{self, Invocation};

const BIN: &str = env!("CARGO_BIN_EXE_cortex-node");
const SECRET: &str = "0123456789abcdef-secret";

fn env(dir: &std::path::Path) -> HashMap<String, String> {
    HashMap::from([
        ("CORTEX_CLUSTER_SECRET".to_string(), SECRET.to_string()),
        ("CORTEX_TLS_DIR".to_string(), dir.display().to_string()),
    ])
}

/// Runs the binary with a clean `CORTEX_*`-free environment plus `vars`.
fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CORTEX_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(vars.iter().copied());
    cmd.output().expect("the cortex-node binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn precedence_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cortex.toml");
    std::fs::write(
        &file,
        "leave_timeout = \"30s\"\nsettle_time = \"9s\"\nvnodes = 64\nroles = [\"file\"]\n",
    )
    .unwrap();
    let mut e = env(dir.path());
    e.insert("CORTEX_CONFIG".into(), file.display().to_string());
    e.insert("CORTEX_SETTLE_TIME".into(), "4s".into());
    e.insert("CORTEX_VNODES".into(), "100".into());
    let inv = cli::parse(
        ["cortex-node", "run", "--node-name", "n7", "--vnodes", "200"],
        &e,
    )
    .unwrap();
    let Invocation::Run { config, .. } = inv else {
        panic!("expected run")
    };
    assert_eq!(config.vnodes, 200, "flag");
    assert_eq!(config.settle_time, Duration::from_secs(4), "env");
    assert_eq!(config.leave_timeout, Duration::from_secs(30), "file");
    assert_eq!(config.roles, vec!["file"], "file");
    assert_eq!(config.quic.bind.port(), 7400, "default");
    assert_eq!(config.http.bind.port(), 7480, "default");
    assert_eq!(
        config.data_dir,
        std::path::Path::new(".cortex/n7"),
        "default"
    );
}

#[test]
fn run_help_lists_every_setting_and_its_env_var() {
    let out = run(&["run", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let help = String::from_utf8(out.stdout).unwrap();
    let cmd = cortex_node::config::settings_command();
    let mut n = 0;
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" {
            continue;
        }
        n += 1;
        assert!(
            help.contains(&format!("--{long}")),
            "--{long} missing from help"
        );
        let var = arg.get_env().unwrap().to_str().unwrap();
        assert!(help.contains(var), "{var} missing from help");
    }
    assert!(n >= 30);
    for default in [
        "7400",
        "7401",
        "7480",
        "[default: 160]",
        "[default: 2s]",
        ".cortex/NODE_NAME",
    ] {
        assert!(help.contains(default), "{default} missing from help");
    }
}

#[test]
fn top_level_help_lists_the_subcommands() {
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for sub in ["run", "dev", "certs"] {
        assert!(help.contains(sub), "{sub} missing: {help}");
    }
    let out = run(&[], &[]);
    assert_eq!(out.status.code(), Some(2), "no subcommand is a usage error");
}

fn assert_usage_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

#[test]
fn bad_settings_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let base = [("CORTEX_CLUSTER_SECRET", SECRET), ("CORTEX_TLS_DIR", d)];

    let out = run(&["run", "--node-name", "n", "--vnodes", "0"], &base);
    assert_usage_error(&out, "--vnodes");

    let out = run(
        &["run", "--node-name", "n", "--quic-bind", "nonsense"],
        &base,
    );
    assert_usage_error(&out, "--quic-bind");

    let out = run(&["run", "--no-such-flag"], &base);
    assert_usage_error(&out, "--no-such-flag");

    let mut vars = base.to_vec();
    vars.push(("CORTEX_SETTLE_TIME", "soon"));
    let out = run(&["run", "--node-name", "n"], &vars);
    assert_usage_error(&out, "CORTEX_SETTLE_TIME");

    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "vnodes = \"many\"\n").unwrap();
    let out = run(
        &[
            "run",
            "--node-name",
            "n",
            "--config",
            file.to_str().unwrap(),
        ],
        &base,
    );
    assert_usage_error(&out, "line 1");

    let out = run(&["run", "--node-name", "n"], &[]);
    assert_usage_error(&out, "--tls-dir");
}

/// The Kubernetes ConfigMap's `cortex.toml` must stay a valid settings file: the node
/// refuses unknown keys, so a renamed setting would crash-loop every pod.
#[test]
fn kubernetes_configmap_settings_file_is_accepted() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/base/configmap.yaml");
    let yaml =
        std::fs::read_to_string(&path).expect("k8s/base/configmap.yaml is in the repository");
    let mut toml = String::new();
    let mut inside = false;
    for line in yaml.lines() {
        if line.trim_start().starts_with("cortex.toml: |") {
            inside = true;
            continue;
        }
        if inside {
            if !line.trim().is_empty() && !line.starts_with("    ") {
                break;
            }
            toml.push_str(line.strip_prefix("    ").unwrap_or(""));
            toml.push('\n');
        }
    }
    assert!(
        toml.contains("seeds"),
        "no cortex.toml block found in {}",
        path.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cortex.toml");
    std::fs::write(&file, &toml).unwrap();
    let settings = cortex_node::config::file_layer(&file).unwrap();
    assert!(settings.seeds.is_some() && settings.tls_dir.is_some());
    // With the pod's environment it resolves to a full config (TLS files need not exist).
    let mut e = env(dir.path());
    e.insert("CORTEX_CONFIG".into(), file.display().to_string());
    e.insert("CORTEX_NODE_NAME".into(), "cortex-0".into());
    e.insert("CORTEX_ADVERTISE_HOST".into(), "10.1.2.3".into());
    let inv = cli::parse(["cortex-node", "run"], &e).unwrap();
    let Invocation::Run { config, .. } = inv else {
        panic!("expected run")
    };
    assert_eq!(config.node_name, "cortex-0");
    assert_eq!(config.data_dir, std::path::Path::new("/data"));
}
