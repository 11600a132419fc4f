//! A Rust client of the bank example: the message types come from the same module the host
//! registers (node/examples/shared/messages.rs), so both sides agree on names and shapes.
//!
//! ```sh
//! # a local cluster of bank hosts (the stock node plus the example's actor kinds)
//! cargo run -p cortex-node --example bank -- dev --nodes 3
//! # a client certificate from the dev CA
//! cargo run -p cortex-node --example bank -- certs issue client --client --dir .cortex/dev-ca
//! # this client (seed: node 0's QUIC address)
//! cargo run -p cortex-client --example bank_client -- 127.0.0.1:7400 .cortex/dev-ca
//! ```
#![allow(clippy::print_stdout)]

#[path = "../../node/examples/shared/messages.rs"]
mod messages;

use std::path::PathBuf;
use std::time::Duration;

use cortex_client::{AskOptions, Client};
use cortex_protocol::ActorId;
use cortex_transport::TlsMaterial;
use messages::{Balance, Deposit, Withdraw};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seed = args.next().unwrap_or_else(|| "127.0.0.1:7400".into());
    let dir = PathBuf::from(args.next().unwrap_or_else(|| ".cortex/dev-ca".into()));
    let tls = TlsMaterial::load(
        &dir.join("ca.crt"),
        &dir.join("client.crt"),
        &dir.join("client.key"),
    )?;
    let client = Client::builder()
        .seeds([seed])
        .tls(tls)
        .default_timeout(Duration::from_secs(3))
        .connect()
        .await?;

    let alice: ActorId = "account/alice".parse()?;
    if let Some(owner) = client.owner_of(&alice) {
        println!("{alice} lives on {owner}; requests go straight there");
    }
    let balance = client.ask(&alice, Deposit(100)).await?;
    println!("deposited 100: balance {balance}");

    // A withdrawal must not run twice if the reply is lost: retry under one idempotency key.
    let once = AskOptions::new(Duration::from_secs(5)).retries(3);
    match client.ask_with(&alice, Withdraw(30), once).await? {
        Ok(left) => println!("withdrew 30: balance {left}"),
        Err(why) => println!("withdrawal refused: {why}"),
    }
    match client.ask(&alice, Withdraw(1_000)).await? {
        Ok(left) => println!("withdrew 1000: balance {left}"),
        Err(why) => println!("withdrawal refused: {why}"),
    }
    // A tell is fire-and-forget (at most once): Ok means a node took it, not that it ran.
    client.tell(&alice, Deposit(5)).await?;
    println!(
        "told a deposit of 5; balance read now: {}",
        client.ask(&alice, Balance).await?
    );
    client.shutdown().await;
    Ok(())
}
