//! Support code for vprompt's top-level examples, benchmarks and end-to-end tests (this package
//! is not published). The examples live in `examples/`, the benches in `benches/`, the tests in
//! `tests/`.

pub mod bench;

use vprompt::prelude::Device;

/// The devices of every backend compiled into this build, by name: `flex` (default features),
/// plus `wgpu`, `cuda` and `cpu` when their features are on.
pub fn compiled_devices() -> Vec<(&'static str, Device)> {
    [
        #[cfg(feature = "flex")]
        ("flex", Device::flex()),
        #[cfg(feature = "wgpu")]
        ("wgpu", Device::wgpu(Default::default())),
        #[cfg(feature = "cuda")]
        ("cuda", Device::cuda(0)),
        #[cfg(feature = "cpu")]
        ("cpu", Device::cpu()),
    ]
    .into_iter()
    .collect()
}
