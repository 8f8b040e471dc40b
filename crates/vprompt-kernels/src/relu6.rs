//! ReLU6, `min(max(x, 0), 6)`, as one differentiable operation.
//!
//! Burn's autodiff has no clamp of its own: `relu(x).clamp_max(6)` records a relu (whose backward
//! masks the gradient) and a `clamp_max` (whose backward is a comparison plus a single-threaded
//! `mask_fill`). In the Lite0 training step on flex `mask_fill` alone was 10.7 % of the profile
//! after the depthwise fix. [`relu6`] is one parallel pass forward (burn-flex's own clamp runs on
//! one thread, 7.5 % of the step) and one backward, `grad * (0 < y < 6)` over the gradient and the
//! saved output, each written over its input when nothing else shares it (`crate::elementwise`).

use burn::tensor::Tensor;

/// ReLU6 of `x`, any shape. The values are those of `relu(x).clamp_max(6.0)` (NaN stays NaN); the
/// gradient is the upstream gradient where `0 < y < 6` (or `y` is NaN) and zero elsewhere, which is
/// also what the composed form gives away from exact ties at 0 and 6.
pub fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if super::on_flex_f32(&x) {
        return flex::relu6(x);
    }
    burn::tensor::activation::relu(x).clamp_max(6.0)
}

#[cfg(feature = "flex")]
/// ReLU6 of one value; NaN stays NaN (as burn's relu and clamp keep it).
fn value(v: f32) -> f32 {
    v.clamp(0.0, 6.0)
}

#[cfg(feature = "flex")]
/// The gradient of ReLU6 at one value given its output `y`: `g` where `0 < y < 6` or `y` is NaN
/// (as burn-flex's relu keeps the gradient of a NaN), zero elsewhere.
fn gradient(g: f32, y: f32) -> f32 {
    let pass = (y > 0.0 && y < 6.0) || y.is_nan();
    if pass { g } else { 0.0 }
}

#[cfg(all(test, feature = "flex"))]
/// ReLU6 of every element, in parallel.
fn forward_f32(x: &[f32]) -> Vec<f32> {
    crate::elementwise::map_slice(x, value)
}

#[cfg(all(test, feature = "flex"))]
/// The gradient of ReLU6 given its output ([`gradient`] for every element). Both slices have one
/// length.
fn backward_f32(output: &[f32], grad: &[f32]) -> Vec<f32> {
    crate::elementwise::zip_map_slices(grad, output, gradient)
}

#[cfg(feature = "flex")]
mod flex {
    //! The backend extension: [`value`] forward, [`gradient`] backward, each one elementwise pass.
    //! Only `f32` tensors reach it (see [`super::relu6`]).
    use super::{gradient, value};
    use crate::elementwise;
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
    use burn::tensor::Tensor;

    /// ReLU6 as one operation.
    #[backend_extension(Flex, Autodiff)]
    pub trait Relu6Backend: Backend {
        /// `min(max(x, 0), 6)`, elementwise.
        fn relu6(x: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    /// [`value`] of every element, in place when `x` owns its values (burn-flex's clamp runs on
    /// one thread).
    fn forward(x: FloatTensor<Flex>) -> FloatTensor<Flex> {
        elementwise::map(x, value)
    }

    impl Relu6Backend for Flex {
        fn relu6(x: FloatTensor<Self>) -> FloatTensor<Self> {
            forward(x)
        }
    }

    #[derive(Debug)]
    struct Relu6Backward;

    impl Backward<Flex, 1> for Relu6Backward {
        /// The output, whose range decides where the gradient passes.
        type State = FloatTensor<Flex>;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [node] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            if let Some(node) = node {
                grads.register::<Flex>(node.id, elementwise::zip_map(grad, ops.state, gradient));
            }
        }
    }

    impl<C: CheckpointStrategy> Relu6Backend for Autodiff<Flex, C> {
        fn relu6(x: FloatTensor<Self>) -> FloatTensor<Self> {
            match Relu6Backward.prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let output = forward(x.into_primitive());
                    prep.finish(output.clone(), output)
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
            }
        }
    }

    /// [`super::relu6`] on a flex `f32` tensor.
    pub(super) fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
        Tensor::from_dispatch(<Dispatch as Relu6Backend>::relu6(x.into_dispatch()))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    const X: [f32; 10] = [-3.0, -0.5, 0.0, 0.25, 1.0, 5.5, 5.999, 6.0, 6.5, 40.0];

    fn composed(x: Tensor<1>) -> Tensor<1> {
        burn::tensor::activation::relu(x).clamp_max(6.0)
    }

    #[test]
    fn forward_clamps_to_zero_and_six_and_keeps_nan() {
        let x = [-3.0, -0.0, 0.5, 6.0, 7.0, f32::INFINITY, f32::NEG_INFINITY];
        assert_eq!(forward_f32(&x), [0.0, 0.0, 0.5, 6.0, 6.0, 6.0, 0.0]);
        assert!(forward_f32(&[f32::NAN])[0].is_nan());
        let long: Vec<f32> = (0..50_001).map(|i| (i % 17) as f32 - 5.0).collect();
        let expected: Vec<f32> = long.iter().map(|v| v.clamp(0.0, 6.0)).collect();
        assert_eq!(forward_f32(&long), expected);
    }

    #[test]
    fn backward_passes_the_gradient_only_inside_the_open_range() {
        let grad = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        let output = X.map(|x: f32| x.clamp(0.0, 6.0));
        let expected = [0.0, 0.0, 0.0, 4.0, 5.0, 6.0, 7.0, 0.0, 0.0, 0.0];
        assert_eq!(backward_f32(&output, &grad), expected);
        // Chunked in parallel: a long input gives the same element-wise result.
        let long_out: Vec<f32> = (0..100_003).map(|i| (i % 9) as f32 - 1.5).collect();
        let long_grad: Vec<f32> = (0..100_003).map(|i| i as f32).collect();
        let result = backward_f32(&long_out, &long_grad);
        for (i, r) in result.iter().enumerate() {
            let y = long_out[i];
            assert_eq!(*r, if y > 0.0 && y < 6.0 { i as f32 } else { 0.0 }, "element {i}");
        }
    }

    /// Values and gradients equal the composed `relu(x).clamp_max(6)` on flex, with and without
    /// autodiff, away from the ties at exactly 0 and 6 (where the composed form's gradient depends
    /// on how each op breaks them).
    #[test]
    fn matches_relu_then_clamp_max() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x = Tensor::<1>::from_data(TensorData::from(X), &device);
            assert_eq!(
                relu6(x.clone()).into_data().try_to_vec::<f32>().unwrap(),
                composed(x).into_data().try_to_vec::<f32>().unwrap()
            );
        }
        let device = Device::flex().autodiff();
        let away_from_ties: Vec<f32> = X.into_iter().filter(|&x| x != 0.0 && x != 6.0).collect();
        let n = away_from_ties.len();
        let upstream =
            Tensor::<1>::from_data(TensorData::new((1..=n).map(|i| i as f32).collect(), [n]), &device);
        let grad = |f: fn(Tensor<1>) -> Tensor<1>| {
            let x =
                Tensor::<1>::from_data(TensorData::new(away_from_ties.clone(), [n]), &device).require_grad();
            let grads = (f(x.clone()) * upstream.clone()).sum().backward();
            x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap()
        };
        assert_eq!(grad(relu6), grad(composed));
    }
}
