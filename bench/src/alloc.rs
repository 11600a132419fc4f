//! A counting global allocator: live heap bytes and allocation calls, for the memory rows.
//!
//! The bench crate lives outside the root workspace and its `unsafe_code = "deny"` lint:
//! a `GlobalAlloc` impl cannot be written without `unsafe`. Each method only forwards to
//! the inner allocator and adjusts the counters.

use std::alloc::{GlobalAlloc, Layout};

#[cfg(feature = "mimalloc")]
use mimalloc::MiMalloc as Inner;
#[cfg(not(feature = "mimalloc"))]
use std::alloc::System as Inner;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};

/// Wraps the system allocator (or mimalloc, with the `mimalloc` feature) and counts while [`set_counting`] is on.
pub(crate) struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);
/// Off during the timed rows: a contended atomic add per allocation would tax the
/// runtimes that allocate more per message twice.
static ON: AtomicBool = AtomicBool::new(false);

/// Turns counting on or off. Deltas are only meaningful between two snapshots taken while
/// it stays on (a free counts even when its allocation was not, so absolute values drift).
pub(crate) fn set_counting(on: bool) {
    ON.store(on, Ordering::SeqCst);
}

/// `blocks`: +1 for a new block, -1 for a freed one, 0 for a resize.
#[inline]
fn count(bytes: isize, call: bool, blocks: isize) {
    if ON.load(Ordering::Relaxed) {
        LIVE.fetch_add(bytes, Ordering::Relaxed);
        if call {
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        if blocks != 0 {
            BLOCKS.fetch_add(blocks, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards its arguments unchanged to the inner allocator, which upholds the
// `GlobalAlloc` contract; the counters are plain atomics and never touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same layout as our caller gave us, forwarded to the inner allocator.
        let p = unsafe { Inner.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize, true, 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { Inner.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize, true, 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by the inner allocator (through us) with this layout.
        unsafe { Inner.dealloc(ptr, layout) };
        count(-(layout.size() as isize), false, -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr`/`layout` came from the inner allocator through us; `new_size` is the caller's.
        let p = unsafe { Inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize, true, 0);
        }
        p
    }
}

/// A reading of the counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    live: isize,
    calls: u64,
    blocks: isize,
}

impl Snapshot {
    pub(crate) fn now() -> Self {
        Self {
            live: LIVE.load(Ordering::SeqCst),
            calls: CALLS.load(Ordering::SeqCst),
            blocks: BLOCKS.load(Ordering::SeqCst),
        }
    }

    /// Live bytes gained since `earlier` (negative when memory was given back).
    pub(crate) fn bytes_since(&self, earlier: &Snapshot) -> isize {
        self.live - earlier.live
    }

    /// Heap blocks gained since `earlier` (allocations not yet freed).
    pub(crate) fn blocks_since(&self, earlier: &Snapshot) -> isize {
        self.blocks - earlier.blocks
    }

    /// Allocation calls since `earlier`.
    pub(crate) fn calls_since(&self, earlier: &Snapshot) -> u64 {
        self.calls - earlier.calls
    }
}
