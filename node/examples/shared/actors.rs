//! The actors of the bank example, registered by `kinds`.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::time::Duration;

use cortex_node::NodeBuilder;
use cortex_runtime::{Actor, Context, Handler, Kind};

use super::messages::*;

/// A bank account: a balance that never goes negative.
#[derive(Default)]
pub struct Account {
    balance: u64,
}
impl Actor for Account {}
impl Handler<Deposit> for Account {
    async fn handle(&mut self, d: Deposit, _: &mut Context<Self>) -> u64 {
        self.balance = self.balance.saturating_add(d.0);
        self.balance
    }
}
impl Handler<Withdraw> for Account {
    async fn handle(&mut self, w: Withdraw, _: &mut Context<Self>) -> Result<u64, String> {
        if w.0 > self.balance {
            return Err(format!(
                "insufficient funds: balance {}, asked {}",
                self.balance, w.0
            ));
        }
        self.balance -= w.0;
        Ok(self.balance)
    }
}
impl Handler<Balance> for Account {
    async fn handle(&mut self, _: Balance, _: &mut Context<Self>) -> u64 {
        self.balance
    }
}

/// How long the chaos workloads' actors take to stop: `BANK_STOP_DELAY_MS` (unset: no
/// delay). The chaos harness sets it (`--stop-delay`) to widen the handover window in which a
/// broken setting lets two nodes host one id, so that its tests catch the setting every time
/// instead of by chance.
fn stop_delay() -> Option<Duration> {
    static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms = std::env::var("BANK_STOP_DELAY_MS").ok()?.parse().ok()?;
        Some(Duration::from_millis(ms))
    })
}

async fn slow_stop() {
    if let Some(d) = stop_delay() {
        tokio::time::sleep(d).await;
    }
}

/// A counter (the chaos harness's idempotency workload).
#[derive(Default)]
pub struct Counter(u64);
impl Actor for Counter {
    async fn stopping(&mut self, _: &mut Context<Self>) {
        slow_stop().await;
    }
}
impl Handler<Incr> for Counter {
    async fn handle(&mut self, _: Incr, _: &mut Context<Self>) -> u64 {
        self.0 += 1;
        self.0
    }
}
impl Handler<Get> for Counter {
    async fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
        self.0
    }
}

/// A read/write/compare-and-set register (the chaos harness's linearizability workload).
#[derive(Default)]
pub struct Register(Option<String>);
impl Actor for Register {
    async fn stopping(&mut self, _: &mut Context<Self>) {
        slow_stop().await;
    }
}
impl Handler<Read> for Register {
    async fn handle(&mut self, _: Read, _: &mut Context<Self>) -> Option<String> {
        self.0.clone()
    }
}
impl Handler<Write> for Register {
    async fn handle(&mut self, w: Write, _: &mut Context<Self>) {
        self.0 = Some(w.0);
    }
}
impl Handler<Cas> for Register {
    async fn handle(&mut self, c: Cas, _: &mut Context<Self>) -> bool {
        if self.0 == c.expected {
            self.0 = Some(c.new);
            true
        } else {
            false
        }
    }
}

/// Registers the example's kinds on a node builder.
pub fn kinds(builder: NodeBuilder) -> NodeBuilder {
    builder
        .kind(
            Kind::new("account", |_| Account::default())
                .handles::<Deposit>()
                .handles::<Withdraw>()
                .handles::<Balance>(),
        )
        .kind(
            Kind::new("counter", |_| Counter::default())
                .handles::<Incr>()
                .handles::<Get>(),
        )
        .kind(
            Kind::new("register", |_| Register::default())
                .handles::<Read>()
                .handles::<Write>()
                .handles::<Cas>(),
        )
}
