//! Two operations of the generated backbones with a faster backward pass on `flex`.
//!
//! Visual prompting back-propagates through the whole frozen backbone to its input, so the input
//! gradient of every layer is on the training step's critical path. Profiling EfficientNet-Lite0's
//! step on burn-flex showed two layer kinds far slower backwards than in PyTorch; each gets a Burn
//! backend extension here, whose forward is burn-flex's own and whose backward is a direct kernel:
//!
//! - [`depthwise::forward`], depthwise convolutions: burn computes their input gradient as a
//!   grouped transposed convolution (a one-column gemm plus col2im per image and channel).
//! - [`relu6`], ReLU6: as `relu(x).clamp_max(6)` its backward is a relu mask plus a comparison and
//!   a `mask_fill`; here it is one parallel pass over the gradient and the saved output.
//!
//! The code generator routes the generated layers through these functions
//! (`vprompt_backbone::import`). On every other device, and for inputs the kernels do not cover,
//! they are exactly the plain Burn operations, so values never depend on the route.

pub mod depthwise;
mod relu6;

pub use relu6::relu6;

/// Whether `tensor` lives on a `flex` device (with or without autodiff) in `f32`: where the
/// extensions in this module run.
#[cfg(feature = "flex")]
fn on_flex_f32<const D: usize>(tensor: &burn::tensor::Tensor<D>) -> bool {
    tensor.dtype() == burn::tensor::DType::F32
        && tensor.device().without_autodiff() == burn::tensor::Device::flex()
}
