//! Devices named by the user: `flex`, `cpu`, `wgpu`, `wgpu:N`, `cuda`, `cuda:N`, on the command
//! line (`--device`), in `VPROMPT_DEVICE`, or as a comma-separated list for data-parallel
//! training (`cuda:0,cuda:1`).
//!
//! The library itself never picks a device; programs (the `vprompt` tool, the examples and the
//! benches) turn the user's choice into one here, so every program accepts the same names and
//! refuses a backend that was not compiled in with the feature to build with.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Device;

/// The environment variable read when no `--device` is given.
pub const DEVICE_ENV: &str = "VPROMPT_DEVICE";

/// A device name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// Not one of the backends vprompt knows.
    #[error("unknown device `{0}`: expected flex, cpu, wgpu, wgpu:N, cuda or cuda:N")]
    Unknown(String),
    /// A known backend that this build does not contain.
    #[error(
        "device `{name}` needs the `{backend}` backend, which this build lacks (build with `--features {backend}`)"
    )]
    NotCompiled {
        /// The name as given.
        name: String,
        /// The Cargo feature that adds the backend.
        backend: &'static str,
    },
    /// The part after `:` is not a device index.
    #[error("device `{0}`: the index after `:` must be a whole number (e.g. cuda:1)")]
    BadIndex(String),
    /// `flex` and `cpu` have a single device, so no index.
    #[error("device `{0}`: {1} has one device and takes no index")]
    NoIndex(String, &'static str),
    /// No backend at all was compiled in.
    #[error("this build has no backend: enable one of the features flex, wgpu, cuda or cpu")]
    NoBackend,
    /// An empty list, or an empty entry in one.
    #[error("empty device name in `{0}`")]
    Empty(String),
}

/// A parsed device name: the backend and, for GPUs, its index.
///
/// Parsing checks only the spelling; [`DeviceName::device`] checks that the backend is compiled
/// in. `wgpu:N` is the N-th discrete GPU in wgpu's list; plain `wgpu` lets wgpu choose (the
/// high-power GPU, or `CUBECL_WGPU_DEFAULT_DEVICE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceName {
    /// Burn's pure-Rust CPU backend.
    Flex,
    /// CubeCL's CPU backend.
    Cpu,
    /// wgpu: wgpu's default adapter (`None`) or the N-th discrete GPU.
    Wgpu(Option<usize>),
    /// CUDA device N (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl DeviceName {
    /// What programs use when the user names no device: an accelerator when one is compiled in
    /// (cuda, then wgpu), else the CPU (flex, then cpu). A `--features cuda` build of a program
    /// whose defaults include flex trains on the GPU unless told otherwise.
    pub fn default_compiled() -> Result<Self, DeviceError> {
        Self::preferred(
            cfg!(feature = "cuda"),
            cfg!(feature = "wgpu"),
            cfg!(feature = "flex"),
            cfg!(feature = "cpu"),
        )
    }

    /// The preferred device among the compiled backends: accelerators first.
    fn preferred(cuda: bool, wgpu: bool, flex: bool, cpu: bool) -> Result<Self, DeviceError> {
        [
            (cuda, Self::Cuda(0)),
            (wgpu, Self::Wgpu(None)),
            (flex, Self::Flex),
            (cpu, Self::Cpu),
        ]
        .into_iter()
        .find_map(|(compiled, name)| compiled.then_some(name))
        .ok_or(DeviceError::NoBackend)
    }

    /// The Cargo feature that compiles this backend in.
    pub fn backend(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Cpu => "cpu",
            Self::Wgpu(_) => "wgpu",
            Self::Cuda(_) => "cuda",
        }
    }

    /// The device, or [`DeviceError::NotCompiled`] when its backend is not in this build.
    pub fn device(self) -> Result<Device, DeviceError> {
        let missing = || DeviceError::NotCompiled {
            name: self.to_string(),
            backend: self.backend(),
        };
        match self {
            #[cfg(feature = "flex")]
            Self::Flex => Ok(Device::flex()),
            #[cfg(feature = "cpu")]
            Self::Cpu => Ok(Device::cpu()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(None) => Ok(Device::wgpu(Default::default())),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(Some(index)) => Ok(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index))),
            #[cfg(feature = "cuda")]
            Self::Cuda(index) => Ok(Device::cuda(index)),
            #[allow(unreachable_patterns)] // every backend compiled in
            _ => Err(missing()),
        }
    }
}

impl FromStr for DeviceName {
    type Err = DeviceError;

    fn from_str(text: &str) -> Result<Self, DeviceError> {
        let name = text.trim();
        if name.is_empty() {
            return Err(DeviceError::Empty(text.to_string()));
        }
        let lower = name.to_ascii_lowercase();
        let (backend, index) = match lower.split_once(':') {
            Some((backend, index)) => {
                let index: usize = index.parse().map_err(|_| DeviceError::BadIndex(name.into()))?;
                (backend, Some(index))
            }
            None => (lower.as_str(), None),
        };
        match (backend, index) {
            ("flex", None) => Ok(Self::Flex),
            ("cpu", None) => Ok(Self::Cpu),
            ("flex", Some(_)) => Err(DeviceError::NoIndex(name.into(), "flex")),
            ("cpu", Some(_)) => Err(DeviceError::NoIndex(name.into(), "cpu")),
            ("wgpu", index) => Ok(Self::Wgpu(index)),
            ("cuda", index) => Ok(Self::Cuda(index.unwrap_or(0))),
            _ => Err(DeviceError::Unknown(name.into())),
        }
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flex => f.write_str("flex"),
            Self::Cpu => f.write_str("cpu"),
            Self::Wgpu(None) => f.write_str("wgpu"),
            Self::Wgpu(Some(index)) => write!(f, "wgpu:{index}"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

/// One device from its name (`cuda:1`), checked against this build.
pub fn parse_device(name: &str) -> Result<Device, DeviceError> {
    name.parse::<DeviceName>()?.device()
}

/// A comma-separated list of device names (`cuda:0,cuda:1`), in order; the first is the main
/// device of data-parallel training. Empty entries are refused.
pub fn parse_device_names(list: &str) -> Result<Vec<DeviceName>, DeviceError> {
    list.split(',')
        .map(|name| match name.parse::<DeviceName>() {
            Err(DeviceError::Empty(_)) => Err(DeviceError::Empty(list.to_string())),
            parsed => parsed,
        })
        .collect()
}

/// What [`device_from_args`] found: the device a program was asked for, and its other arguments.
#[derive(Debug, Clone)]
pub struct DeviceArgs {
    /// The device's name, for messages and result tables.
    pub name: DeviceName,
    /// The device itself.
    pub device: Device,
    /// The arguments without `--device NAME`, in order: the program's own.
    pub args: Vec<String>,
}

/// The device a program was asked for: `--device NAME` (or `--device=NAME`) among `args`, else
/// `VPROMPT_DEVICE`, else [`DeviceName::default_compiled`]; with the arguments left for the
/// program's own parsing.
///
/// `args` excludes the program name: `device_from_args(std::env::args().skip(1))`.
pub fn device_from_args(args: impl IntoIterator<Item = String>) -> Result<DeviceArgs, DeviceError> {
    let mut rest = Vec::new();
    let mut chosen = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--device" {
            chosen = Some(args.next().ok_or_else(|| DeviceError::Empty("--device".into()))?);
        } else if let Some(name) = arg.strip_prefix("--device=") {
            chosen = Some(name.to_string());
        } else {
            rest.push(arg);
        }
    }
    let chosen = chosen.or_else(|| std::env::var(DEVICE_ENV).ok().filter(|v| !v.trim().is_empty()));
    let name = match chosen {
        Some(name) => name.parse()?,
        None => DeviceName::default_compiled()?,
    };
    Ok(DeviceArgs {
        name,
        device: name.device()?,
        args: rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An accelerator build defaults to its accelerator, also beside the default flex.
    #[test]
    fn the_default_device_is_an_accelerator_when_one_is_compiled() {
        let pick = |cuda, wgpu, flex, cpu| DeviceName::preferred(cuda, wgpu, flex, cpu).ok();
        assert_eq!(pick(true, false, true, false), Some(DeviceName::Cuda(0)));
        assert_eq!(pick(false, true, true, false), Some(DeviceName::Wgpu(None)));
        assert_eq!(pick(true, true, true, true), Some(DeviceName::Cuda(0)));
        assert_eq!(pick(false, false, true, true), Some(DeviceName::Flex));
        assert_eq!(pick(false, false, false, true), Some(DeviceName::Cpu));
        assert_eq!(pick(false, false, false, false), None);
    }

    #[test]
    fn names_parse_and_print_back() {
        for (text, name) in [
            ("flex", DeviceName::Flex),
            ("cpu", DeviceName::Cpu),
            ("wgpu", DeviceName::Wgpu(None)),
            ("wgpu:2", DeviceName::Wgpu(Some(2))),
            ("cuda", DeviceName::Cuda(0)),
            ("cuda:1", DeviceName::Cuda(1)),
        ] {
            assert_eq!(text.parse::<DeviceName>(), Ok(name));
        }
        assert_eq!(DeviceName::Cuda(0).to_string(), "cuda:0");
        assert_eq!(" CUDA:3 ".parse::<DeviceName>(), Ok(DeviceName::Cuda(3)));
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        assert_eq!(
            "metal".parse::<DeviceName>(),
            Err(DeviceError::Unknown("metal".into()))
        );
        assert_eq!(
            "cuda:x".parse::<DeviceName>(),
            Err(DeviceError::BadIndex("cuda:x".into()))
        );
        assert_eq!(
            "cuda:-1".parse::<DeviceName>(),
            Err(DeviceError::BadIndex("cuda:-1".into()))
        );
        assert_eq!(
            "flex:1".parse::<DeviceName>(),
            Err(DeviceError::NoIndex("flex:1".into(), "flex"))
        );
        assert_eq!(
            parse_device_names("cuda:0,,cuda:1"),
            Err(DeviceError::Empty("cuda:0,,cuda:1".into()))
        );
        assert_eq!(
            parse_device_names("cuda:0, cuda:1"),
            Ok(vec![DeviceName::Cuda(0), DeviceName::Cuda(1)])
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_not_compiled_in_names_its_feature() {
        let error = parse_device("cuda:1").unwrap_err();
        assert_eq!(
            error.to_string(),
            "device `cuda:1` needs the `cuda` backend, which this build lacks (build with `--features cuda`)"
        );
    }

    #[cfg(feature = "flex")]
    #[test]
    fn the_flag_wins_and_is_removed_from_the_arguments() {
        let args = ["5", "--device", "flex", "shift"].map(String::from);
        let chosen = device_from_args(args).unwrap();
        assert_eq!(chosen.name, DeviceName::Flex);
        assert_eq!(chosen.args, ["5", "shift"]);
        assert_eq!(
            device_from_args(["--device=FLEX".to_string()]).unwrap().name,
            DeviceName::Flex
        );
        let error = device_from_args(["--device=tpu".to_string()]).unwrap_err();
        assert_eq!(error, DeviceError::Unknown("tpu".into()));
        let error = device_from_args(["--device".to_string()]).unwrap_err();
        assert_eq!(error, DeviceError::Empty("--device".into()));
    }
}
