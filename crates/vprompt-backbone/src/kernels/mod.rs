//! Operations of the generated backbones with faster kernels on `flex`.
//!
//! Visual prompting back-propagates through the whole frozen backbone to its input, so the forward
//! pass and the input gradient of every layer are on the training step's critical path. Profiling
//! the step on burn-flex against PyTorch showed three places far slower; each gets a Burn backend
//! extension here:
//!
//! - [`conv2d::forward`], depthwise convolutions (EfficientNet-Lite0): burn computes their input
//!   gradient as a grouped transposed convolution (a one-column gemm plus col2im per image and
//!   channel); here it is a direct scatter.
//! - [`conv2d::forward`], dense convolutions (ResNets): burn-flex's forward pass converts the batch
//!   to NHWC on one thread and runs a small gemm per 512 output pixels; here it is im2col and one
//!   gemm per image (`dense`).
//! - [`relu6`], ReLU6: as `relu(x).clamp_max(6)` its backward is a relu mask plus a comparison and
//!   a `mask_fill`; here it is one parallel pass over the gradient and the saved output.
//!
//! The code generator routes the generated layers through these functions
//! (`vprompt_backbone::import`). On every other device, and for inputs the kernels do not cover,
//! they are exactly the plain Burn operations, so values never depend on the route.

pub mod conv2d;
#[cfg(feature = "flex")]
mod dense;
mod relu6;

pub use relu6::relu6;

/// Whether `tensor` lives on a `flex` device (with or without autodiff) in `f32`: where the
/// extensions in this module run.
#[cfg(feature = "flex")]
fn on_flex_f32<const D: usize>(tensor: &burn::tensor::Tensor<D>) -> bool {
    tensor.dtype() == burn::tensor::DType::F32
        && tensor.device().without_autodiff() == burn::tensor::Device::flex()
}
