//! `cortex-chaos`: run a chaos scenario against real node processes and check the history.
//!
//! ```text
//! cortex-chaos run chaos/scenarios/partition-halves.toml [--short] [--out DIR]
//! cortex-chaos plan chaos/scenarios/random-mix.toml      # print the fault schedule
//! cortex-chaos check target/chaos/partition-halves-1795753953  # judge a recorded run again
//! cortex-chaos cleanup                                   # remove leftovers of a killed run
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cortex_chaos::run::{RunOptions, run};
use cortex_chaos::scenario::{Scenario, parse_duration};

#[derive(Parser)]
#[command(
    name = "cortex-chaos",
    version,
    about = "Fault injection, workloads and history checks for a Cortex cluster"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario; exits 0 when every checker passes, 1 when one fails, 2 on error.
    Run {
        /// Scenario TOML (chaos/scenarios/*.toml).
        scenario: PathBuf,
        /// Use the scenario's short duration (test runs).
        #[arg(long)]
        short: bool,
        /// Report folder [default: target/chaos/<scenario>-<unix time>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stay on loopback even as root (no partitions, loss or delay).
        #[arg(long)]
        loopback: bool,
        /// Deliberately broken client: retry counter increments without idempotency keys.
        #[arg(long)]
        dedupe_off: bool,
        /// Override every node's --settle-time (e.g. 0s, a deliberately broken setting).
        #[arg(long, value_parser = parse_duration)]
        settle_time: Option<Duration>,
        /// Extra flag for every node's `run` (repeat).
        #[arg(long = "node-arg", allow_hyphen_values = true)]
        node_args: Vec<String>,
        /// Extra flag for one node: INDEX=FLAG, e.g. 1=--vnodes=40 (repeat).
        #[arg(long = "node-arg-for", value_parser = parse_node_arg, allow_hyphen_values = true)]
        node_args_for: Vec<(usize, String)>,
        /// Slow the workload actors' stop hooks (e.g. 500ms): widens handover windows, so a
        /// broken setting shows every time.
        #[arg(long, value_parser = parse_duration)]
        stop_delay: Option<Duration>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Judge a recorded run again: read a report folder's history.jsonl, run every checker,
    /// print the verdicts; exits 0 when every gating checker passes, 1 when one fails.
    Check {
        /// A report folder, or its history.jsonl.
        history: PathBuf,
        /// Bound on membership convergence after the last heal (the scenario's
        /// `converge_within`).
        #[arg(long, value_parser = parse_duration, default_value = "20s")]
        converge_within: Duration,
    },
    /// Print a scenario's fault schedule.
    Plan {
        /// Scenario TOML.
        scenario: PathBuf,
        /// The short form.
        #[arg(long)]
        short: bool,
    },
    /// Remove namespaces and links left by a run that was killed (names starting `cxc`).
    Cleanup,
    /// (internal) NFQUEUE delay holder, run inside a node's namespace.
    #[command(hide = true)]
    NfqHold {
        #[arg(long)]
        queue: u16,
        #[arg(long)]
        delay_ms: u64,
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
    },
}

fn parse_node_arg(s: &str) -> Result<(usize, String), String> {
    let (i, flag) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write INDEX=FLAG, e.g. 1=--vnodes=40"))?;
    let i = i
        .parse()
        .map_err(|_| format!("{s:?}: INDEX must be a node number"))?;
    Ok((i, flag.to_owned()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CORTEX_CHAOS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match cli.cmd {
        Cmd::NfqHold {
            queue,
            delay_ms,
            jitter_ms,
        } => match cortex_chaos::nfq_hold::run(
            queue,
            Duration::from_millis(delay_ms),
            Duration::from_millis(jitter_ms),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::Cleanup => {
            for r in cortex_chaos::net::cleanup_stale() {
                println!("removed {r}");
            }
            ExitCode::SUCCESS
        }
        Cmd::Check {
            history,
            converge_within,
        } => {
            let path = if history.is_dir() {
                history.join("history.jsonl")
            } else {
                history
            };
            let snap = match cortex_chaos::history::Snapshot::read_jsonl(&path) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let verdicts = cortex_chaos::check::all(&snap, converge_within.as_micros() as u64);
            let mut passed = true;
            for v in &verdicts {
                passed &= v.passed || !v.gating;
                let mark = match (v.passed, v.gating) {
                    (true, _) => "PASS",
                    (false, true) => "FAIL",
                    (false, false) => "WARN",
                };
                println!("  {mark} {:<17} {}", v.name, v.summary);
                for e in &v.examples {
                    println!("         - {e}");
                }
            }
            println!("verdict: {}", if passed { "PASS" } else { "FAIL" });
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Cmd::Plan { scenario, short } => match Scenario::load(&scenario) {
            Ok(s) => {
                for p in s.plan(short) {
                    println!(
                        "+{:7.1}s .. +{:7.1}s  {:<18} {}",
                        p.at.as_secs_f64(),
                        p.until.as_secs_f64(),
                        p.kind.name(),
                        cortex_chaos::faults::detail(&p.kind)
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::Run {
            scenario,
            short,
            out,
            loopback,
            dedupe_off,
            settle_time,
            node_args,
            node_args_for,
            stop_delay,
            quiet,
        } => {
            let s = match Scenario::load(&scenario) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let out = out.unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                PathBuf::from("target/chaos").join(format!("{}-{t}", s.name))
            });
            let mut opts = RunOptions::short(out);
            opts.short = short;
            opts.force_loopback = loopback;
            opts.dedupe_off = dedupe_off;
            opts.settle_time = settle_time;
            opts.node_args = node_args;
            opts.node_args_for = node_args_for;
            opts.stop_delay = stop_delay;
            opts.progress = !quiet;
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            rt.block_on(async move {
                // Dropping the run future on a signal runs every guard's destructor:
                // faults undone, nodes killed, namespaces deleted.
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let sigterm = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    r = run(&s, opts) => match r {
                        Ok(o) => {
                            println!("{}", o.summary);
                            println!("report: {}", o.report_dir.join("report.html").display());
                            if o.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
                        }
                        Err(e) => {
                            eprintln!("chaos run failed: {e}");
                            ExitCode::from(2)
                        }
                    },
                    _ = tokio::signal::ctrl_c() => {
                        eprintln!("interrupted: faults undone, nodes stopped, namespaces removed");
                        ExitCode::from(130)
                    }
                    _ = sigterm => {
                        eprintln!("terminated: faults undone, nodes stopped, namespaces removed");
                        ExitCode::from(143)
                    }
                }
            })
        }
    }
}
