//! Hostile lengths inside small frames must not steer allocation: a counting allocator
//! measures what decoding them costs.
//!
//! Its own test binary, because it installs a global allocator.
#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; this only forwards to System.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use cortex_protocol::*;

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the thread-locals may be gone while a thread shuts down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    let _ = TOTAL.try_with(|t| t.set(t.get() + size));
}

// SAFETY: every call forwards to the system allocator unchanged; the counters are
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// (largest single allocation, total bytes allocated) while running `f`.
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    let r = f();
    (r, LARGEST.with(Cell::get), TOTAL.with(Cell::get))
}

/// bincode varint for a u64 that needs the 8-byte form.
fn huge_varint(v: u64) -> Vec<u8> {
    let mut out = vec![253];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

fn hostile_frames() -> Vec<(&'static str, Vec<u8>)> {
    let claim = 1 << 20; // 1 MiB claimed inside frames of a few dozen bytes
    let mut v = Vec::new();

    // Tell whose actor kind string claims 1 MiB.
    let mut body = vec![0u8]; // Target::Virtual
    body.extend(huge_varint(claim));
    body.extend_from_slice(b"order");
    v.push(("string length", raw_frame(1, kind::TELL, &body)));

    // Tell whose payload claims 1 MiB.
    let mut body = encode_payload(&(
        Target::Virtual("a/b".parse().unwrap()),
        MessageName::new("m").unwrap(),
    ))
    .unwrap();
    body.extend(huge_varint(claim));
    body.extend_from_slice(&[1, 2, 3]);
    v.push(("payload length", raw_frame(1, kind::TELL, &body)));

    // Topology snapshot claiming 2^40 members.
    let mut body = vec![1, 128];
    body.extend(huge_varint(1 << 40));
    body.extend_from_slice(&[0; 8]);
    v.push(("member count", raw_frame(1, kind::TOPOLOGY_SNAPSHOT, &body)));

    // Hello whose token claims 1 MiB (the frozen handshake path).
    let mut body = encode_payload(&(
        VersionRange { min: 1, max: 1 },
        "prod",
        PeerIdentity::Client { name: "c".into() },
        0u64,
    ))
    .unwrap();
    body.push(1); // Some(token)
    body.extend(huge_varint(claim));
    v.push(("hello token", raw_frame(1, kind::HELLO, &body)));

    // Batch claiming u32::MAX entries, then one claiming as many as could fit.
    v.push((
        "batch count",
        raw_frame(1, kind::BATCH, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
    ));
    let mut body = 200u32.to_be_bytes().to_vec();
    body.extend_from_slice(&[0u8; 1200]);
    v.push(("batch of empty entries", raw_frame(1, kind::BATCH, &body)));
    v
}

#[test]
fn hostile_lengths_allocate_nothing_they_claim() {
    let decoder = FrameDecoder::new(4096);
    for (what, frame) in hostile_frames() {
        let (r, largest, total) = measure(|| decoder.decode(&frame));
        assert!(r.is_err(), "{what}: {r:?}");
        // What is left is the error value and its message, never the claimed size.
        assert!(
            largest <= frame.len().max(256) && total < 2048,
            "{what}: frame of {} bytes allocated {largest} at once, {total} in all",
            frame.len()
        );
    }
}

#[test]
fn hostile_lengths_in_user_payloads_allocate_nothing_they_claim() {
    let mut bytes = huge_varint(1 << 30);
    bytes.extend_from_slice(b"abc");
    let (r, largest, _) = measure(|| decode_payload::<String>(&bytes));
    assert!(r.is_err());
    assert!(largest < 1024, "{largest}");
    let (r, largest, _) = measure(|| decode_payload::<Vec<u64>>(&bytes));
    assert!(r.is_err());
    assert!(largest < 1024, "{largest}");
}

/// The counter does see real allocations, so the bounds above mean something.
#[test]
fn honest_frames_allocate_what_they_hold() {
    let mut tell = sample_tell();
    tell.payload = vec![7u8; 64 * 1024].into();
    let frame = frame_of(&Envelope::Tell(tell));
    let (r, largest, _) = measure(|| FrameDecoder::default().decode(&frame));
    assert!(r.unwrap().is_some());
    assert!(largest >= 64 * 1024, "{largest}");
}
