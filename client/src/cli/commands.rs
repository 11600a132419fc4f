//! What each `cortex` subcommand does.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use bytes::Bytes;
use cortex_protocol::{ActorId, MessageName, TopicId};
use cortex_transport::TlsMaterial;
use futures::StreamExt;

use super::output::table;
use super::{
    Cli, Command, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, EXIT_UNREACHABLE, EXIT_USAGE, Payload,
};
use crate::admin::{AdminClient, AdminError};
use crate::{AskOptions, Client, ClientError};

/// A failed command: what to print and the exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::Config(_) | ClientError::Tls(_) => EXIT_USAGE,
            ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
            ClientError::Timeout { .. } => EXIT_TIMEOUT,
            _ => EXIT_FAILED,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

impl From<AdminError> for Failure {
    fn from(e: AdminError) -> Self {
        use cortex_protocol::ErrorCode;
        let code = match (&e, e.code()) {
            (AdminError::Url { .. }, _) => EXIT_USAGE,
            (_, Some(ErrorCode::Timeout)) => EXIT_TIMEOUT,
            (_, Some(ErrorCode::Unreachable)) => EXIT_UNREACHABLE,
            _ => EXIT_FAILED,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

fn print_json(v: &impl serde::Serialize) {
    // Serializing plain data cannot fail; print nothing rather than panic if it ever did.
    if let Ok(s) = serde_json::to_string_pretty(v) {
        println!("{s}");
    }
}

/// Runs a parsed command line and returns the process exit code, printing results on
/// stdout and errors on stderr.
pub async fn run(cli: Cli) -> u8 {
    match execute(&cli).await {
        Ok(()) => EXIT_OK,
        Err(f) => {
            eprintln!("cortex: error: {}", f.message);
            f.code
        }
    }
}

async fn execute(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Members => members(cli).await,
        Command::Ring { id } => ring(cli, id.as_deref()).await,
        Command::Activations { member, since } => activations(cli, member, *since).await,
        Command::Tell {
            id,
            message,
            payload,
        } => tell(cli, id, message, payload).await,
        Command::Ask {
            id,
            message,
            payload,
            retries,
        } => ask(cli, id, message, payload, *retries).await,
        Command::Publish {
            topic,
            message,
            payload,
        } => publish(cli, topic, message, payload).await,
        Command::Subscribe {
            topic,
            count,
            duration,
        } => subscribe(cli, topic, *count, *duration).await,
    }
}

fn admin(cli: &Cli) -> Result<AdminClient, Failure> {
    Ok(AdminClient::new(&cli.node)?.with_timeout(cli.timeout))
}

fn actor_id(s: &str) -> Result<ActorId, Failure> {
    s.parse()
        .map_err(|e| Failure::usage(format!("bad actor id: {e}")))
}

fn message_name(s: &str) -> Result<MessageName, Failure> {
    MessageName::new(s).map_err(|e| Failure::usage(format!("bad message name: {e}")))
}

fn topic_id(s: &str) -> Result<TopicId, Failure> {
    TopicId::new(s).map_err(|e| Failure::usage(format!("bad topic: {e}")))
}

/// What to send: JSON for the admin endpoint, or raw bytes for QUIC.
enum Body {
    Json(serde_json::Value),
    Raw(Bytes),
}

fn body(p: &Payload) -> Result<Body, Failure> {
    match (&p.body, &p.payload_hex) {
        (Some(j), None) => serde_json::from_str(j)
            .map(Body::Json)
            .map_err(|e| Failure::usage(format!("the payload is not valid JSON: {e}"))),
        (None, Some(h)) => hex::decode(h.trim())
            .map(|b| Body::Raw(b.into()))
            .map_err(|e| Failure::usage(format!("--payload-hex is not hex: {e}"))),
        _ => Err(Failure::usage(
            "give the message as JSON (for example '{\"amount\": 5}', or null for a message without fields) or as --payload-hex HEX",
        )),
    }
}

fn tls(cli: &Cli) -> Result<TlsMaterial, Failure> {
    let dir = &cli.tls_dir;
    let ca = cli.tls_ca.clone().unwrap_or_else(|| dir.join("ca.crt"));
    let cert = cli
        .tls_cert
        .clone()
        .unwrap_or_else(|| dir.join(format!("{}.crt", cli.cert_name)));
    let key = cli
        .tls_key
        .clone()
        .unwrap_or_else(|| dir.join(format!("{}.key", cli.cert_name)));
    let loaded = if cert.is_file() && key.is_file() {
        TlsMaterial::load(&ca, &cert, &key)
    } else if cli.token.is_some() {
        TlsMaterial::load_ca_only(&ca)
    } else {
        return Err(Failure::usage(format!(
            "no client certificate at {}: issue one with `cortex-node certs issue {} --client --dir {}`, or pass --token",
            cert.display(),
            cli.cert_name,
            dir.display()
        )));
    };
    loaded.map_err(|e| Failure::usage(e.to_string()))
}

async fn quic_client(cli: &Cli) -> Result<Client, Failure> {
    let mut b = Client::builder()
        .seeds(cli.seeds.clone())
        .cluster(cli.cluster.clone())
        .tls(tls(cli)?)
        .name("cortex-cli")
        .default_timeout(cli.timeout)
        .connect_timeout(cli.connect_timeout)
        // A command sends a few messages, or prints a subscription's deliveries one by one:
        // the OS default buffer keeps up with that, and asking for more would print the
        // "capped by the kernel" warning on every run on most hosts.
        .udp_buffer(0);
    if let Some(t) = &cli.token {
        b = b.token(t.clone());
    }
    Ok(b.connect().await?)
}

async fn members(cli: &Cli) -> Result<(), Failure> {
    let members = admin(cli)?.members().await?;
    if cli.json {
        print_json(&members);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                format!("{}{}", m.name, if m.local { " *" } else { "" }),
                m.incarnation.to_string(),
                m.state.clone(),
                m.quic.to_string(),
                m.http.map(|h| h.to_string()).unwrap_or_else(|| "-".into()),
                if m.roles.is_empty() {
                    "-".into()
                } else {
                    m.roles.join(",")
                },
                m.since.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAME",
                "INCARNATION",
                "STATE",
                "QUIC",
                "HTTP",
                "ROLES",
                "SINCE"
            ],
            &rows
        )
    );
    println!("(* = the node that answered)");
    Ok(())
}

async fn ring(cli: &Cli, id: Option<&str>) -> Result<(), Failure> {
    let a = admin(cli)?;
    if let Some(id) = id {
        let info = a.owner(&actor_id(id)?).await?;
        if cli.json {
            print_json(&info);
        } else {
            println!(
                "{} -> {} (ring epoch {} of the answering node)",
                info.id,
                info.owner
                    .as_deref()
                    .unwrap_or("no owner: the ring is empty"),
                info.epoch
            );
        }
        return Ok(());
    }
    let r = a.ring().await?;
    if cli.json {
        print_json(&r);
        return Ok(());
    }
    println!(
        "epoch {}  digest {}  vnodes {}  settled {}",
        r.epoch,
        r.digest,
        r.vnodes,
        if r.settled { "yes" } else { "no" }
    );
    if let Some(q) = &r.quorum {
        let count = format!(
            "{} of {} members reachable",
            q.reachable.len(),
            q.base.len()
        );
        match (q.policy.as_str(), q.has_quorum) {
            ("off", _) => println!("quorum rule off ({count})"),
            (_, true) => println!("quorum: yes ({count})"),
            (_, false) => println!(
                "quorum: NO ({count}): this node serves no virtual actors until a majority is back"
            ),
        }
    }
    let rows: Vec<Vec<String>> = r
        .shares
        .iter()
        .map(|s| vec![s.node.clone(), format!("{:.1}%", s.share * 100.0)])
        .collect();
    print!("{}", table(&["NODE", "SHARE"], &rows));
    Ok(())
}

async fn activations(cli: &Cli, node: &str, since: u64) -> Result<(), Failure> {
    let target = if node.contains("://") || node.contains(':') {
        AdminClient::new(node)?.with_timeout(cli.timeout)
    } else {
        let members = admin(cli)?.members().await?;
        let m = members
            .iter()
            .filter(|m| m.name == node)
            .max_by_key(|m| m.incarnation)
            .ok_or_else(|| Failure {
                code: EXIT_FAILED,
                message: format!(
                    "no member named {node:?} (known: {})",
                    members
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let http = m.http.ok_or_else(|| Failure {
            code: EXIT_FAILED,
            message: format!("{node} publishes no HTTP address"),
        })?;
        AdminClient::new(&format!("http://{http}"))?.with_timeout(cli.timeout)
    };
    let recs = target.activations(since).await?;
    if cli.json {
        print_json(&recs);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = recs
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                r.id.clone(),
                r.epoch.to_string(),
                (r.activated_us / 1000).to_string(),
                match r.passivated_us {
                    None => "live".into(),
                    Some(p) => format!(
                        "passivated after {:.1}s",
                        p.saturating_sub(r.activated_us) as f64 / 1e6
                    ),
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["SEQ", "ID", "EPOCH", "ACTIVATED_UNIX_MS", "STATE"], &rows)
    );
    Ok(())
}

async fn tell(cli: &Cli, id: &str, message: &str, p: &Payload) -> Result<(), Failure> {
    let (id, name) = (actor_id(id)?, message_name(message)?);
    match body(p)? {
        Body::Json(v) => admin(cli)?.tell_json(&id, &name, &v, cli.timeout).await?,
        Body::Raw(bytes) => {
            let c = quic_client(cli).await?;
            let r = c.tell_raw(&id, &name, bytes, cli.timeout).await;
            c.shutdown().await;
            r?;
        }
    }
    if cli.json {
        print_json(&serde_json::json!({ "accepted": true }));
    } else {
        println!("sent");
    }
    Ok(())
}

async fn ask(cli: &Cli, id: &str, message: &str, p: &Payload, retries: u32) -> Result<(), Failure> {
    let (id, name) = (actor_id(id)?, message_name(message)?);
    match body(p)? {
        Body::Json(v) => {
            let reply = admin(cli)?.ask_json(&id, &name, &v, cli.timeout).await?;
            if cli.json {
                print_json(&reply);
            } else {
                print_json(&reply.reply);
            }
        }
        Body::Raw(bytes) => {
            let c = quic_client(cli).await?;
            let opts = AskOptions::new(cli.timeout).retries(retries);
            let r = c.ask_raw(&id, &name, bytes, opts).await;
            c.shutdown().await;
            let reply = r?;
            let hex = hex::encode(&reply.payload);
            if cli.json {
                print_json(&serde_json::json!({
                    "message": reply.message.as_str(),
                    "payload_hex": hex,
                }));
            } else {
                println!("{} {hex}", reply.message);
            }
        }
    }
    Ok(())
}

async fn publish(cli: &Cli, topic: &str, message: &str, p: &Payload) -> Result<(), Failure> {
    let (topic, name) = (topic_id(topic)?, message_name(message)?);
    match body(p)? {
        Body::Json(v) => admin(cli)?.publish_json(&topic, &name, &v).await?,
        Body::Raw(bytes) => {
            let c = quic_client(cli).await?;
            let r = c.publish_raw(&topic, &name, bytes).await;
            c.shutdown().await;
            r?;
        }
    }
    if cli.json {
        print_json(&serde_json::json!({ "accepted": true }));
    } else {
        println!("published");
    }
    Ok(())
}

async fn subscribe(
    cli: &Cli,
    topic: &str,
    count: Option<u64>,
    duration: Option<Duration>,
) -> Result<(), Failure> {
    let topic = topic_id(topic)?;
    let c = quic_client(cli).await?;
    let mut sub = c.subscribe_raw(&topic).await?;
    if !cli.json {
        eprintln!("subscribed to {topic}; Ctrl-C stops");
    }
    let stop_at = duration.map(|d| tokio::time::Instant::now() + d);
    let mut seen = 0u64;
    loop {
        if count.is_some_and(|n| seen >= n) {
            break;
        }
        let until = async {
            match stop_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let m = tokio::select! {
            m = sub.next() => m,
            _ = until => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(m) = m else { break };
        seen += 1;
        let hex = hex::encode(&m.payload);
        if cli.json {
            // One object per line, for scripts.
            println!(
                "{}",
                serde_json::json!({
                    "topic": m.topic.as_str(),
                    "message": m.message.as_str(),
                    "payload_hex": hex,
                })
            );
        } else {
            println!("{} {} {hex}", m.topic, m.message);
        }
    }
    drop(sub);
    c.shutdown().await;
    Ok(())
}
