use std::collections::HashMap;
use std::time::Duration;

use super::*;

const SECRET: &str = "0123456789abcdef-secret";

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn base_env(dir: &Path) -> HashMap<String, String> {
    env(&[
        ("CORTEX_CLUSTER_SECRET", SECRET),
        ("CORTEX_TLS_DIR", dir.to_str().unwrap()),
    ])
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cortex.toml");
    std::fs::write(
        &file,
        r#"
vnodes = 10
settle_time = "7s"
cluster_name = "from-file"
seeds = ["a.example:7401", "b.example"]
"#,
    )
    .unwrap();
    let mut e = base_env(dir.path());
    e.insert("CORTEX_CONFIG".into(), file.display().to_string());
    e.insert("CORTEX_VNODES".into(), "20".into());
    e.insert("CORTEX_SETTLE_TIME".into(), "3s".into());
    let cfg = load_from(["cortex-node", "--node-name", "n1", "--vnodes", "30"], &e).unwrap();
    assert_eq!(cfg.vnodes, 30, "flag beats env and file");
    assert_eq!(cfg.settle_time, Duration::from_secs(3), "env beats file");
    assert_eq!(cfg.cluster_name, "from-file", "file beats default");
    assert_eq!(cfg.seeds, vec!["a.example:7401", "b.example:7401"]);
    assert_eq!(cfg.leave_timeout, DEFAULT_LEAVE_TIMEOUT, "default");
    assert_eq!(cfg.quic.bind.port(), DEFAULT_QUIC_PORT);
    assert_eq!(cfg.gossip.bind.port(), DEFAULT_GOSSIP_PORT);
    assert_eq!(cfg.http.bind.port(), DEFAULT_HTTP_PORT);
    assert_eq!(cfg.data_dir, Path::new(".cortex").join("n1"));
    assert_eq!(cfg.tls, TlsFiles::in_dir(dir.path(), "n1"));
    assert_eq!(cfg.cluster_secret.expose(), SECRET.as_bytes());
    assert_eq!(cfg.max_frame_size, cortex_protocol::DEFAULT_MAX_FRAME);
    assert_eq!(cfg.udp_buffer_size, cortex_transport::DEFAULT_UDP_BUFFER);
    assert_eq!(cfg.worker_threads, None, "one per core unless set");
    let cfg = load_from(["x", "--node-name", "n", "--worker-threads", "1"], &e).unwrap();
    assert_eq!(cfg.worker_threads, Some(1));
    let cfg = load_from(["x", "--node-name", "n", "--udp-buffer-size", "0"], &e).unwrap();
    assert_eq!(cfg.udp_buffer_size, 0, "0: the OS default");
    let cfg = load_from(["x", "--node-name", "n", "--udp-buffer-size", "8MiB"], &e).unwrap();
    assert_eq!(cfg.udp_buffer_size, 8 << 20);
}

#[test]
fn config_flag_beats_config_env() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, "cluster_name = \"a\"\n").unwrap();
    std::fs::write(&b, "cluster_name = \"b\"\n").unwrap();
    let mut e = base_env(dir.path());
    e.insert("CORTEX_CONFIG".into(), a.display().to_string());
    let cfg = load_from(
        [
            "cortex-node",
            "--node-name",
            "n",
            "--config",
            b.to_str().unwrap(),
        ],
        &e,
    )
    .unwrap();
    assert_eq!(cfg.cluster_name, "b");
}

#[test]
fn every_setting_has_an_env_var_and_a_toml_key() {
    let cmd = settings_command();
    let mut n = 0;
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" {
            continue;
        }
        n += 1;
        let var = arg
            .get_env()
            .unwrap_or_else(|| panic!("--{long} has no env var"));
        let var = var.to_str().unwrap();
        assert!(var.starts_with("CORTEX_"), "{var}");
        assert!(arg.get_help().is_some(), "--{long} has no help");
    }
    assert!(n >= 30, "only {n} settings");
}

#[test]
fn env_lists_split_on_commas_and_empty_values_are_unset() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = base_env(dir.path());
    e.insert("CORTEX_SEEDS".into(), "10.0.0.1:7401,seed.svc".into());
    e.insert("CORTEX_ROLES".into(), "web,compute,web".into());
    e.insert("CORTEX_LEAVE_TIMEOUT".into(), "".into());
    let cfg = load_from(["cortex-node", "--node-name", "n"], &e).unwrap();
    assert_eq!(cfg.seeds, vec!["10.0.0.1:7401", "seed.svc:7401"]);
    assert_eq!(cfg.roles, vec!["web", "compute"]);
    assert_eq!(cfg.leave_timeout, DEFAULT_LEAVE_TIMEOUT);
}

#[test]
fn bad_env_value_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = base_env(dir.path());
    e.insert("CORTEX_QUIC_BIND".into(), "nonsense".into());
    let err = load_from(["cortex-node", "--node-name", "n"], &e).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Env { .. }), "{msg}");
    assert!(msg.contains("CORTEX_QUIC_BIND"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn file_errors_give_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "vnodes = 3\nquic_bnd = \"1.2.3.4:1\"\n").unwrap();
    let e = base_env(dir.path());
    let err = load_from(
        ["x", "--node-name", "n", "--config", file.to_str().unwrap()],
        &e,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ConfigError::FileSyntax { line: Some(2), .. }),
        "{msg}"
    );
    assert!(msg.contains("quic_bnd"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    let err = load_from(
        ["x", "--node-name", "n", "--config", "/nonexistent/c.toml"],
        &e,
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::FileRead { .. }), "{err}");
}

#[test]
fn missing_tls_and_secret_say_how_to_fix() {
    let err = load_from(["x", "--node-name", "n"], &HashMap::new()).unwrap_err();
    assert!(err.to_string().contains("--tls-dir"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let e = env(&[("CORTEX_TLS_DIR", dir.path().to_str().unwrap())]);
    let err = load_from(["x", "--node-name", "n"], &e).unwrap_err();
    assert!(err.to_string().contains("certs init"), "{err}");
    std::fs::write(dir.path().join(CLUSTER_SECRET_FILE), "short\n").unwrap();
    let err = load_from(["x", "--node-name", "n"], &e).unwrap_err();
    assert!(err.to_string().contains("at least 16"), "{err}");
    assert!(!err.to_string().contains("short"), "secret leaked: {err}");
    std::fs::write(dir.path().join(CLUSTER_SECRET_FILE), format!("{SECRET}\n")).unwrap();
    let cfg = load_from(["x", "--node-name", "n"], &e).unwrap();
    assert_eq!(cfg.cluster_secret.expose(), SECRET.as_bytes());
}

#[test]
fn invalid_values_are_refused_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = base_env(dir.path());
    let cases: &[(&[&str], &str)] = &[
        (&["--node-name", "bad name"], "--node-name"),
        (&["--vnodes", "0"], "--vnodes"),
        (&["--settle-time", "2"], "--settle-time"),
        (&["--leave-timeout", "2h"], "--leave-timeout"),
        (&["--max-frame-size", "12"], "--max-frame-size"),
        (&["--udp-buffer-size", "1KiB"], "--udp-buffer-size"),
        (&["--udp-buffer-size", "2GiB"], "--udp-buffer-size"),
        (&["--worker-threads", "0"], "--worker-threads"),
        (&["--seed", "host:notaport"], "--seed"),
        (&["--seed", "bad host:1"], "--seed"),
        (&["--log-level", "info,=[{"], "--log-level"),
        (&["--otlp-endpoint", "collector:4317"], "--otlp-endpoint"),
        (
            &[
                "--quic-bind",
                "0.0.0.0:9000",
                "--gossip-bind",
                "0.0.0.0:9000",
            ],
            "--gossip-bind",
        ),
        (&["--quic-advertise", "0.0.0.0:1"], "--quic-advertise"),
        (&["--client-token", "short"], "--client-token"),
        (&["--role", "a/b"], "--role"),
        (&["--log-format", "xml"], "--log-format"),
    ];
    for (args, setting) in cases {
        let mut argv = vec!["x", "--node-name", "n"];
        argv.extend_from_slice(args);
        let err = load_from(argv, &e).unwrap_err().to_string();
        assert!(err.contains(setting), "{args:?}: {err}");
        assert!(!err.contains('\n'), "{args:?}: {err}");
    }
}

#[test]
fn tokens_come_from_flags_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# clients\ntoken-from-file-0001\n\n").unwrap();
    let e = base_env(dir.path());
    let cfg = load_from(
        [
            "x",
            "--node-name",
            "n",
            "--client-token",
            "token-from-flag-0001",
            "--client-tokens-file",
            tokens.to_str().unwrap(),
        ],
        &e,
    )
    .unwrap();
    let got: Vec<&[u8]> = cfg.client_tokens.iter().map(Secret::expose).collect();
    assert_eq!(
        got,
        vec![&b"token-from-flag-0001"[..], b"token-from-file-0001"]
    );
}

#[test]
fn default_node_name_is_the_host_name_label() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = base_env(dir.path());
    e.insert("HOSTNAME".into(), "cortex-2.cortex.default.svc".into());
    let cfg = load_from(["x"], &e).unwrap();
    assert_eq!(cfg.node_name, "cortex-2");
}

#[test]
fn advertised_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsFiles::in_dir(dir.path(), "n");
    let mut cfg = NodeConfig::local("n", tls, Secret::new(SECRET)).unwrap();
    let bound: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    assert_eq!(cfg.advertised(&cfg.quic, bound), bound);
    cfg.advertise_host = Some("10.1.2.3".parse().unwrap());
    let any: SocketAddr = "0.0.0.0:6000".parse().unwrap();
    assert_eq!(
        cfg.advertised(&cfg.quic, any),
        "10.1.2.3:6000".parse().unwrap()
    );
    cfg.quic.advertise = Some("192.0.2.7:0".parse().unwrap());
    assert_eq!(
        cfg.advertised(&cfg.quic, any),
        "192.0.2.7:6000".parse().unwrap()
    );
    cfg.quic.advertise = Some("192.0.2.7:9".parse().unwrap());
    assert_eq!(
        cfg.advertised(&cfg.quic, any),
        "192.0.2.7:9".parse().unwrap()
    );
}

#[test]
fn local_config_binds_loopback_with_os_ports() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        NodeConfig::local("n", TlsFiles::in_dir(dir.path(), "n"), Secret::new(SECRET)).unwrap();
    for l in [cfg.quic, cfg.gossip, cfg.http] {
        assert!(l.bind.ip().is_loopback());
        assert_eq!(l.bind.port(), 0);
    }
    assert!(NodeConfig::local("n", TlsFiles::in_dir(dir.path(), "n"), Secret::new("x")).is_err());
}

#[tokio::test]
async fn seeds_resolve_and_unresolvable_ones_are_skipped() {
    let seeds = vec![
        "127.0.0.1:7401".to_string(),
        "localhost:7402".to_string(),
        "127.0.0.1:99999".to_string(),
    ];
    let addrs = resolve_seeds(&seeds, Duration::from_secs(10)).await;
    assert!(
        addrs.contains(&"127.0.0.1:7401".parse().unwrap()),
        "{addrs:?}"
    );
    assert!(addrs.iter().any(|a| a.port() == 7402), "{addrs:?}");
    assert_eq!(
        addrs.len(),
        addrs
            .iter()
            .filter(|a| a.port() == 7401 || a.port() == 7402)
            .count()
    );
}
