//! Tuning the C allocator for training: keep freed tensor memory for the next step.
//!
//! A training step allocates and frees hundreds of megabytes of activations and gradients
//! (EfficientNet-Lite0 at batch 32: ~1.3 GB peak). glibc's `malloc` serves large blocks with `mmap`
//! and gives them back with `munmap` when freed, and trims the top of its heap, so the next step
//! page-faults every block back in and the kernel zeroes it again: on the 2-core development
//! machine `perf` put page faults and page clearing at ~15 % of a Lite0 training step.
//! [`tune_allocator`] raises the `mmap` threshold to its maximum (32 MiB), stops trimming, and
//! turns `mmap` off for blocks above the threshold too (`M_MMAP_MAX = 0`), so freed blocks stay in
//! the heap and are reused: at batch 32 Lite0's largest activations (`[32, 96, 112, 112]`, 147 MiB)
//! are far above 32 MiB and were still mapped and faulted in anew on every forward pass. Measured (`cargo bench --bench train_step`,
//! interleaved runs with and without this call): 4.8 -> 7.0 images/s (+45 %), peak resident
//! memory unchanged (1.28 GB), because the step reaches that peak anyway. Turning `mmap` off on
//! top of that made the Lite0 forward pass (`cargo bench --bench backbone`, two alternated pairs
//! through `MALLOC_MMAP_MAX_=0`) 47.5-50.3 -> 55.7-62.1 images/s, with a lower peak (421 -> 375
//! MiB) and the training step unchanged. Either setting alone
//! (through `GLIBC_TUNABLES`) made it slower; jemalloc and mimalloc (preloaded) made it slower too.
//!
//! It changes a process-wide setting, so the library never calls it on its own: the `vprompt`
//! tool, the examples and the benchmarks call it first thing, and programs that train should too.

/// Tunes glibc's `malloc` for repeated large tensor allocations (see the [module](self) docs).
/// Call once, at the start of `main`. Returns `true` if the settings were applied; `false` on
/// platforms other than Linux with glibc, where it does nothing.
pub fn tune_allocator() -> bool {
    imp::tune()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod imp {
    /// glibc's largest allowed `M_MMAP_THRESHOLD` on 64-bit targets (`HEAP_MAX_SIZE / 2`).
    const MMAP_THRESHOLD: libc::c_int = 32 * 1024 * 1024;

    pub(super) fn tune() -> bool {
        // SAFETY: `mallopt` only sets allocator parameters; glibc takes its own lock, and changing
        // these parameters is valid at any time, also with blocks already allocated.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
                && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn tune() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn applies_on_glibc_and_allocation_still_works() {
        assert!(super::tune_allocator());
        // Blocks around and above the new threshold are served and freed correctly.
        // 200 MiB: above the threshold and above the 64 MiB heaps of glibc's per-thread arenas,
        // which with mmap off must come from the main heap.
        for size in [1 << 20, 31 << 20, 33 << 20, 200 << 20] {
            let v = vec![7u8; size];
            assert_eq!(v.iter().map(|&b| u64::from(b)).sum::<u64>(), 7 * size as u64);
        }
    }
}
