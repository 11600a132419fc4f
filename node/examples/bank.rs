//! A node binary of your own: the stock `cortex-node` command line plus your actor kinds.
//!
//! ```sh
//! cargo run -p cortex-node --example bank -- dev --nodes 3 --base-port 0
//! ```
//! starts three of these nodes; any client (see client/examples) can then ask
//! `account/alice` for `bank.Deposit` wherever it lives.

#[path = "shared/actors.rs"]
mod actors;
#[path = "shared/messages.rs"]
mod messages;

fn main() -> std::process::ExitCode {
    cortex_node::main_with(actors::kinds)
}
