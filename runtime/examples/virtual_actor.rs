//! Virtual bank accounts: activated by their first message, reached by id, typed or by
//! name and bytes (as the node's router does), passivated when idle or on request.
//!
//! Run with `cargo run -p cortex-runtime --example virtual_actor`.
#![allow(clippy::print_stdout)] // an example is a tiny CLI: it reports on stdout

use std::time::Duration;

use cortex_protocol::{ActorId, MessageName};
use cortex_runtime::{
    Actor, ActorError, Codec, Context, Handler, Kind, System, SystemConfig, VirtualConfig,
};
use serde::{Deserialize, Serialize};

struct Account {
    id: ActorId,
    balance: u64,
}

impl Actor for Account {
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        println!("  {} passivated with balance {}", self.id, self.balance);
    }
}

#[derive(Serialize, Deserialize)]
struct Deposit {
    amount: u64,
}
#[derive(Serialize, Deserialize, Debug)]
struct Balance(u64);
cortex_runtime::message!(Deposit => Balance, "bank.Deposit", reply = "bank.Balance");

impl Handler<Deposit> for Account {
    async fn handle(&mut self, d: Deposit, _ctx: &mut Context<Self>) -> Balance {
        self.balance += d.amount;
        Balance(self.balance)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t = Duration::from_secs(1);
    let system =
        System::new(SystemConfig::default().virtuals(VirtualConfig::default().max_activations(2)));
    let accounts = system.virtuals();
    accounts.register(
        Kind::new("account", |id: &ActorId| Account {
            id: id.clone(),
            balance: 0,
        })
        .handles::<Deposit>()
        .idle_timeout(Some(Duration::from_secs(60))),
    )?;
    let mut events = accounts.events();

    let alice: ActorId = "account/alice".parse()?;
    let balance = accounts
        .get::<Account>(alice.clone())
        .ask(Deposit { amount: 10 }, t)
        .await?;
    println!("alice (typed): {balance:?}");

    // As the router: a name, JSON bytes from an HTTP edge, and the reply in JSON.
    let deposit = MessageName::new("bank.Deposit")?;
    let (reply, bytes) = accounts
        .send_erased(&alice, &deposit, br#"{"amount":5}"#, Codec::Json, t)
        .await?;
    println!("alice (json): {reply} {}", String::from_utf8_lossy(&bytes));

    // A bound of two live activations: the third passivates the least recently used.
    for who in ["bob", "carol"] {
        let id: ActorId = format!("account/{who}").parse()?;
        accounts
            .get::<Account>(id)
            .ask(Deposit { amount: 1 }, t)
            .await?;
    }
    println!("live: {:?}", accounts.live_ids());

    let unknown: ActorId = "loan/1".parse()?;
    let err = accounts
        .send_erased(&unknown, &deposit, b"{}", Codec::Json, t)
        .await
        .unwrap_err();
    println!("unknown kind -> {err} ({:?})", err.code());
    assert!(matches!(err, ActorError::UnknownKind { .. }));

    system.shutdown(Duration::from_secs(5)).await;
    while let Ok(ev) = events.try_recv() {
        println!("event #{}: {:?} {}", ev.activation, ev.event, ev.id);
    }
    Ok(())
}
