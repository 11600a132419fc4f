//! Messages shared by the bank host (node/examples/bank.rs) and its clients
//! (client/examples, cluster-tests): define them once, use them on both sides.
#![allow(dead_code, missing_docs, unreachable_pub)]

use serde::{Deserialize, Serialize};

/// Add to an account; replies with the new balance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deposit(pub u64);
cortex_runtime::message!(Deposit => u64, "bank.Deposit");

/// Take from an account; replies with the new balance or why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Withdraw(pub u64);
cortex_runtime::message!(Withdraw => Result<u64, String>, "bank.Withdraw");

/// Read an account's balance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Balance;
cortex_runtime::message!(Balance => u64, "bank.Balance");

/// Add one; replies with the new value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incr;
cortex_runtime::message!(Incr => u64, "counter.Incr");

/// Read the counter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Get;
cortex_runtime::message!(Get => u64, "counter.Get");

/// Read a register.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Read;
cortex_runtime::message!(Read => Option<String>, "register.Read");

/// Overwrite a register.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Write(pub String);
cortex_runtime::message!(Write => (), "register.Write");

/// Compare-and-set a register; replies whether it was set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cas {
    pub expected: Option<String>,
    pub new: String,
}
cortex_runtime::message!(Cas => bool, "register.Cas");
