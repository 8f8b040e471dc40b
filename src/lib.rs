//! Support code for vprompt's top-level examples, benchmarks and end-to-end tests (this package
//! is not published). The examples live in `examples/`, the benches in `benches/`, the tests in
//! `tests/`.

pub mod bench;

use vprompt::DeviceName;
use vprompt::prelude::Device;

/// The devices a bench runs on, by name: the one asked for with `--device NAME` (`cargo bench
/// --bench epoch -- --device cuda:1`) or `VPROMPT_DEVICE`, else one of every backend compiled
/// into this build (`flex` by default, plus `wgpu`, `cuda` and `cpu` with their features).
pub fn bench_devices() -> Result<Vec<(String, Device)>, vprompt::DeviceError> {
    let asked = std::env::args().any(|a| a == "--device" || a.starts_with("--device="))
        || std::env::var(vprompt::device::DEVICE_ENV).is_ok_and(|v| !v.trim().is_empty());
    if asked {
        let chosen = vprompt::device_from_args(std::env::args().skip(1))?;
        return Ok(vec![(chosen.name.to_string(), chosen.device)]);
    }
    let names = [
        #[cfg(feature = "flex")]
        DeviceName::Flex,
        #[cfg(feature = "wgpu")]
        DeviceName::Wgpu(None),
        #[cfg(feature = "cuda")]
        DeviceName::Cuda(0),
        #[cfg(feature = "cpu")]
        DeviceName::Cpu,
    ];
    names
        .into_iter()
        .map(|name| Ok((name.to_string(), name.device()?)))
        .collect()
}

/// The README's and the user guide's code is compiled here (this package is not published, so
/// the files it reads may live outside any library crate) (and, unless `no_run`, run) as doc tests.
#[cfg(doctest)]
pub mod guide_doctests {
    #[doc = include_str!("../README.md")]
    pub struct Readme;
    #[doc = include_str!("../docs/api.md")]
    pub struct Api;
    #[doc = include_str!("../docs/backends.md")]
    pub struct Backends;
    #[doc = include_str!("../docs/training.md")]
    pub struct Training;
    #[doc = include_str!("../docs/backbones.md")]
    pub struct Backbones;
    #[doc = include_str!("../docs/black-box.md")]
    pub struct BlackBox;
}
