//! Test helpers shared by the vprompt crates (a dev-dependency only, never published).
//!
//! - [`device_tests!`]: instantiate `fn check(device: &Device)` once per compiled backend, so the
//!   same assertions run on `flex`, `wgpu`, `cuda` and `cpu` (whichever features the calling
//!   crate has on).
//! - [`npy`]: read the `.npy` reference files written by the committed Python scripts.
//! - [`assert_close`]: compare values with an absolute + relative tolerance, naming the worst
//!   element.
//! - [`fuzz`]: seeded mutation fuzzing of file readers, with an allocation bound.

pub mod fuzz;
pub mod npy;

use burn::prelude::*;

/// Generates one `#[test]` per compiled backend for each named function `fn name(device: &Device)`.
///
/// The `cfg(feature = ..)` attributes are expanded in the calling crate, so its own backend
/// features (`flex`, `wgpu`, `cuda`, `cpu`) decide which devices are tested.
///
/// ```ignore
/// fn output_shape(device: &Device) { /* ... */ }
/// vprompt_testkit::device_tests!(output_shape);
/// // -> flex::output_shape, wgpu::output_shape, ... as separate tests
/// ```
#[macro_export]
macro_rules! device_tests {
    ($($name:ident),+ $(,)?) => {
        #[cfg(feature = "flex")]
        mod flex {
            $( #[test] fn $name() { super::$name(&burn::prelude::Device::flex()) } )+
        }
        #[cfg(feature = "wgpu")]
        mod wgpu {
            $( #[test] fn $name() { super::$name(&burn::prelude::Device::wgpu(Default::default())) } )+
        }
        #[cfg(feature = "cuda")]
        mod cuda {
            $( #[test] fn $name() { super::$name(&burn::prelude::Device::cuda(0)) } )+
        }
        #[cfg(feature = "cpu")]
        mod cpu {
            $( #[test] fn $name() { super::$name(&burn::prelude::Device::cpu()) } )+
        }
    };
}

/// Reads a tensor back to the host as `f32` values.
pub fn to_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("tensor data converts to f32")
}

/// Asserts `|actual - expected| <= atol + rtol * |expected|` element-wise, reporting the worst
/// element's index and values on failure.
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    assert_eq!(actual.len(), expected.len(), "length differs");
    let mut worst: Option<(usize, f32)> = None;
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let excess = (a - e).abs() - (atol + rtol * e.abs());
        let bad = excess > 0.0 || a.is_nan() != e.is_nan();
        if bad && worst.is_none_or(|(_, w)| excess > w) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "values differ beyond atol {atol} + rtol {rtol}: at index {i} actual {} expected {}",
            actual[i], expected[i]
        );
    }
}

/// Brightness added by [`shift_domain`]: `77 / 255`, about 0.3.
pub const DOMAIN_SHIFT: u8 = 77;

/// The domain shift of the black-box tests and example, on `[0, 255]` pixel bytes: returns the
/// "clean" images dimmed to `floor(0.7 x)` and the "shifted" ones, `clean + 77`. A frozen model
/// labels the clean images; prompting it for the shifted ones has a known cure, the constant
/// prompt `-77 / 255`, which restores the clean images exactly (so 100 % agreement).
pub fn shift_domain(pixels: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let clean: Vec<u8> = pixels.iter().map(|&p| (0.7 * p as f32).floor() as u8).collect();
    let shifted = clean.iter().map(|&p| p + DOMAIN_SHIFT).collect();
    (clean, shifted)
}
