//! Every scenario in its short form against real `bank` node processes (one network
//! namespace each when root, else loopback with packet faults skipped), with every checker
//! passing; and deliberately broken settings that the matching checker must catch.
//!
//! Runs one at a time (a shared lock): each starts 3 to 5 nodes on a 2-core machine.
//! Needs `target/debug/examples/bank` (`cargo build -p cortex-node --examples`).
// Each run prints its one-screen summary (shown with --nocapture or on failure).
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cortex_chaos::run::{RunOptions, RunOutcome, run};
use cortex_chaos::scenario::Scenario;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn scenario(name: &str) -> Scenario {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scenarios/{name}.toml"));
    Scenario::load(&p).unwrap()
}

fn out_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{name}"))
}

fn run_short(s: &Scenario, tweak: impl FnOnce(&mut RunOptions)) -> RunOutcome {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut opts = RunOptions::short(out_dir(&s.name));
    opts.holder_exe = Some(PathBuf::from(env!("CARGO_BIN_EXE_cortex-chaos")));
    tweak(&mut opts);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(run(s, opts)).unwrap();
    eprintln!("{}", out.summary);
    out
}

fn assert_passes(name: &str) {
    assert_passes_with(name, |_| {});
}

fn assert_passes_with(name: &str, tweak: impl FnOnce(&mut RunOptions)) {
    let out = run_short(&scenario(name), tweak);
    assert!(out.passed(), "{name} failed:\n{}", out.summary);
    let ops = out.verdict("deadlines").unwrap().counts["ops"];
    assert!(ops > 100, "{name}: only {ops} ops ran");
}

#[test]
fn kill_one() {
    assert_passes("kill-one");
}

#[test]
fn pause_one() {
    assert_passes("pause-one");
}

/// Passes, and (in network namespaces, where the cut happens) no id was ever live on two
/// nodes: the quorum rule fences the minority before the majority activates its ids.
fn assert_partition_without_overlap(name: &str) {
    let out = run_short(&scenario(name), |_| {});
    assert!(out.passed(), "{name} failed:\n{}", out.summary);
    if out.topology == "netns" {
        let v = out.verdict("single-activation").unwrap();
        // Counted from the first overlap on: absent means none.
        let overlaps = v.counts.get("overlaps").copied().unwrap_or(0);
        assert_eq!(overlaps, 0, "{name}:\n{}", out.summary);
    }
}

#[test]
fn partition_minority() {
    assert_partition_without_overlap("partition-minority");
}

#[test]
fn partition_halves() {
    assert_partition_without_overlap("partition-halves");
}

/// The same cut with `--quorum=off`: both halves keep serving, and the single-activation
/// checker sees ids live on both sides (excused then, as the price of availability). So the
/// tests above pass because of the rule, not because the cut was too short to matter.
#[test]
fn partition_halves_without_quorum_splits_the_brain() {
    let out = run_short(&scenario("partition-halves"), |o| {
        o.node_args.push("--quorum=off".into());
    });
    assert!(out.passed(), "partition-halves failed:\n{}", out.summary);
    if out.topology == "netns" {
        let overlaps = out.verdict("single-activation").unwrap().counts["overlaps"];
        assert!(
            overlaps > 0,
            "no split brain without the rule:\n{}",
            out.summary
        );
    }
}

#[test]
fn flaky_links() {
    let out = run_short(&scenario("flaky-links"), |_| {});
    assert!(out.passed(), "flaky-links failed:\n{}", out.summary);
    // The dropped datagrams show up as QUIC losses in the nodes' metrics (loss faults run
    // only inside network namespaces, that is as root).
    if out.topology == "netns" {
        let lost = out.quic_lost_packets.unwrap_or(0);
        assert!(lost > 0, "no QUIC loss counted:\n{}", out.summary);
    }
}

#[test]
fn slow_links() {
    assert_passes("slow-links");
}

/// Graceful restarts hand over with no overlap even when the actors take 500 ms to stop:
/// the old owner's stop hooks run before the new owner's settle time lets it activate.
#[test]
fn rolling_restart() {
    assert_passes_with("rolling-restart", |o| {
        o.stop_delay = Some(std::time::Duration::from_millis(500));
    });
}

#[test]
fn random_mix() {
    assert_passes("random-mix");
}

/// Counter retries without idempotency keys while the owner is paused: the attempts
/// queue up and all run when it resumes, so increments apply more than once.
#[test]
fn counter_checker_catches_retries_without_idempotency_keys() {
    let s: Scenario = toml::from_str(
        r#"
        name = "dedupe-off"
        nodes = 3
        duration = "9s"
        short_duration = "9s"
        [workload]
        counters = 8
        register_workers = 1
        topics = 0
        ask_timeout = "5s"
        retries = 9
        [[faults]]
        kind = "pause"
        nodes = [1]
        at = "3s"
        duration = "1500ms"
        "#,
    )
    .unwrap();
    let out = run_short(&s, |o| o.dedupe_off = true);
    let v = out.verdict("counters").unwrap();
    assert!(!v.passed, "duplicates went unnoticed:\n{}", out.summary);
    assert!(
        v.counts.get("applied_twice").copied().unwrap_or(0) > 0,
        "{v:?}"
    );
}

/// One node placing ids on a different ring (`--vnodes` differs): with the same
/// membership, two nodes each think they own some ids and both activate them.
#[test]
fn single_activation_checker_catches_disagreeing_placement() {
    let mut s = scenario("kill-one");
    s.name = "vnodes-mismatch".into();
    let out = run_short(&s, |o| o.node_args_for = vec![(1, "--vnodes=8".into())]);
    let v = out.verdict("single-activation").unwrap();
    assert!(
        !v.passed,
        "double activation went unnoticed:\n{}",
        out.summary
    );
}

/// Settle time zero (a deliberately broken setting): a restarted node activates ids it has
/// just gained before the old owner has handed them over, so an id is briefly live on two
/// nodes during a plain graceful restart, where no fault excuses it.
///
/// Left alone, the overlap is a race the broken setting allows, not one it forces: the old
/// owner often stops within milliseconds, and one suite run in many saw none in a 15 s
/// scenario. The workload actors' stop hooks therefore take 500 ms here (`--stop-delay`),
/// so that an id that moves to the restarted node and gets a request in that time is live
/// on two nodes at once. That still depends on requests landing in those windows: runs
/// flag 2 to 15 overlaps, and now and then none (1 of 14 runs on 2026-11-28, a fresh-clone
/// CI run among them), so the broken setting must be caught in one of up to three runs.
#[test]
fn single_activation_checker_catches_settle_time_zero() {
    let s = scenario("rolling-restart");
    let mut missed = Vec::new();
    for _ in 0..3 {
        let out = run_short(&s, |o| {
            o.settle_time = Some(std::time::Duration::ZERO);
            o.stop_delay = Some(std::time::Duration::from_millis(500));
        });
        let v = out.verdict("single-activation").unwrap();
        if !v.passed {
            assert!(
                v.counts.get("outside_faults").copied().unwrap_or(0) > 0,
                "{v:?}"
            );
            return;
        }
        missed.push(out.summary);
    }
    panic!(
        "settle time 0 went unnoticed in {} runs:\n{}",
        missed.len(),
        missed.join("\n")
    );
}
