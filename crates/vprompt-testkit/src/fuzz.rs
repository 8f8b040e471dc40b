//! Mutation fuzzing that runs in CI: seeded mutations of valid files (bit flips, special values,
//! sizes overwritten with extremes, truncation, duplicated and inserted chunks) fed to a reader,
//! which must return (a value or a typed error) without panicking and without one allocation
//! larger than a bound.
//!
//! Each fuzz test binary installs [`CountingAllocator`] as its global allocator. The number of
//! cases per target is [`cases`]: a bounded default in CI, `VPROMPT_FUZZ_CASES=100000` for a long
//! run on demand.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Seeded mutations of byte strings.
#[derive(Debug, Clone)]
pub struct Mutator {
    state: u64,
}

impl Mutator {
    /// A mutator whose sequence of mutations is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// The next pseudo-random number (SplitMix64).
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// `input` with one to four mutations. Positions favour the start, where headers are.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let len = out.len();
            let at = if self.below(2) == 0 {
                self.below(len.min(64))
            } else {
                self.below(len)
            };
            match self.below(7) {
                0 if len > 0 => out[at] ^= 1 << self.below(8),
                1 if len > 0 => out[at] = [0x00, 0xFF, 0x7F, 0x80, 0x01][self.below(5)],
                2 if len >= 4 => {
                    let at = at.min(len - 4);
                    let value: u32 = [u32::MAX, 0x7FFF_FFFF, 0, 0x0001_0000, 1][self.below(5)];
                    let bytes = if self.below(2) == 0 {
                        value.to_be_bytes()
                    } else {
                        value.to_le_bytes()
                    };
                    out[at..at + 4].copy_from_slice(&bytes);
                }
                3 if len >= 8 && self.below(2) == 0 => {
                    let at = at.min(len - 8);
                    out[at..at + 8].copy_from_slice(&[u64::MAX, 1 << 62, 0][self.below(3)].to_le_bytes());
                }
                3 => out.truncate(self.below(len + 1)),
                4 if len > 0 => {
                    let end = (at + 1 + self.below(64)).min(len);
                    let chunk = out[at..end].to_vec();
                    out.splice(at..at, chunk);
                }
                5 => {
                    let bytes: Vec<u8> = (0..1 + self.below(16)).map(|_| self.next_u64() as u8).collect();
                    out.splice(at..at, bytes);
                }
                _ if len > 0 => out[at] = self.next_u64() as u8,
                _ => out.push(self.next_u64() as u8),
            }
        }
        out
    }
}

/// Cases per fuzz target: `VPROMPT_FUZZ_CASES`, or `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("VPROMPT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, recording the largest single allocation: install it in a fuzz test
/// binary with `#[global_allocator] static ALLOC: CountingAllocator = CountingAllocator;`.
#[derive(Debug)]
pub struct CountingAllocator;

// SAFETY: every call is forwarded to `System` unchanged; only a size is recorded.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Feeds [`cases`]`(default)` mutations of `valid` to `read` (which gets the mutated bytes and
/// returns whether it succeeded), and panics naming the target and case if `read` panics or one
/// allocation exceeds `bound` bytes. Returns how many mutated inputs were accepted.
pub fn run(
    target: &str,
    valid: &[u8],
    default: usize,
    bound: usize,
    mut read: impl FnMut(&[u8]) -> bool,
) -> usize {
    let mut mutator = Mutator::new(
        target
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into())),
    );
    let mut accepted = 0;
    for case in 0..cases(default) {
        let input = mutator.mutate(valid);
        LARGEST.store(0, Ordering::Relaxed);
        match catch_unwind(AssertUnwindSafe(|| read(&input))) {
            Ok(ok) => accepted += usize::from(ok),
            Err(_) => panic!(
                "{target}: case {case} panicked (VPROMPT_FUZZ_CASES >= {} reproduces it)",
                case + 1
            ),
        }
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            largest <= bound,
            "{target}: case {case} allocated {largest} bytes at once, more than the bound {bound}"
        );
    }
    accepted
}
