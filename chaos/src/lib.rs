//! Cortex chaos harness: faults, workloads, history checkers, reports.
