//! Membership bench (placeholder until written).
fn main() {}
