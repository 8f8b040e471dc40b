//! QuickGELU, `x * sigmoid(alpha * x)` (the CLIP towers' activation, `alpha = 1.702`), as one
//! differentiable operation.
//!
//! burn-onnx emits it as three operations: a multiplication by the constant, burn's sigmoid and a
//! multiplication by `x`. On flex the sigmoid runs on one thread (`expf` per element), and the
//! backward pass runs four elementwise passes (two products, the sigmoid's derivative, the sum)
//! while the tape keeps both `x` and the sigmoid. In the ViT-B/32 training step the sigmoid's
//! forward and backward were 11 % of the profile. [`quick_gelu`] is one parallel pass forward
//! and one backward, which keeps only `x` and recomputes the sigmoid.
//!
//! Its sigmoid takes `exp` of `-|alpha * x|` from [`exp_nonpositive`], a branch-free polynomial
//! that the passes' loops vectorise (AVX-512 here: 16 lanes), where libm's scalar `expf` call per
//! element had been 10 % of the ViT-B/32 training step. It is within 2 ulp of the exact `exp`, so
//! the values differ from burn's composed form (libm's `expf`) by a few ulp, not bit for bit.

use burn::tensor::Tensor;

/// `x * sigmoid(alpha * x)`, `x` of any shape and `alpha` a `[1]` constant (`[n]` broadcasts
/// along the last dim of `x`, as the generated code's `alpha.unsqueeze_dims(..)` does).
///
/// On `flex` in `f32`, with a one-element `alpha` that needs no gradient, it is one operation
/// with the values and input gradient of the composed form up to a few ulp (see the module
/// docs); everywhere else it is the composed form.
pub fn quick_gelu<const D: usize>(x: Tensor<D>, alpha: Tensor<1>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if super::on_flex_f32(&x) && alpha.dims() == [1] && !alpha.is_require_grad() {
        let alpha = alpha.into_scalar::<f32>();
        return flex::quick_gelu(x, alpha);
    }
    let scaled = x.clone().mul(alpha.unsqueeze::<D>());
    x.mul(burn::tensor::activation::sigmoid(scaled))
}

/// `exp(t)` for `t <= 0` (0 below -87, where `exp` leaves the normal floats; NaN stays NaN),
/// within 2 ulp: `t = n ln 2 + r` with `|r| <= ln 2 / 2`, Cephes' polynomial for `exp(r)` (as in
/// its `expf`), times `2^n` built from the exponent bits. No branches and no calls, so a loop
/// over it vectorises; plain multiplies and adds (no fused multiply-add), so its values do not
/// depend on the vector width.
#[cfg(feature = "flex")]
#[inline(always)]
fn exp_nonpositive(t: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Rounded to the nearest integer by adding and subtracting 1.5 * 2^23 (no `floor`, which is
    // a libm call below SSE4.1); `|t * log2 e| < 2^22` wherever the result is kept.
    const ROUND: f32 = 12_582_912.0;
    let n = (t * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = t - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e_r = p * (r * r) + r + 1.0;
    // n is in [-126, 0] wherever the result is kept: 2^n is a normal float.
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if t < -87.0 { 0.0 } else { e_r * two_n }
}

/// The logistic sigmoid from `exp(-|x|)`, which never overflows: `1 / (1 + e)` for `x >= 0`,
/// `e / (1 + e)` below (burn-flex's two branches, both computed and one selected).
#[cfg(feature = "flex")]
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let d = 1.0 + e;
    if x >= 0.0 { 1.0 / d } else { e / d }
}

#[cfg(feature = "flex")]
/// QuickGELU of one value.
#[inline(always)]
fn value(v: f32, alpha: f32) -> f32 {
    v * sigmoid(v * alpha)
}

#[cfg(feature = "flex")]
/// The input gradient at `x = v` from the upstream gradient `g`: `g * s + g * v * s * (1 - s) *
/// alpha` with `s = sigmoid(alpha * v)`, grouped as burn's autodiff groups the composed form's
/// two paths.
#[inline(always)]
fn gradient(g: f32, v: f32, alpha: f32) -> f32 {
    let s = sigmoid(v * alpha);
    g * s + g * v * s * (1.0 - s) * alpha
}

#[cfg(feature = "flex")]
mod flex {
    //! The backend extension: [`value`] forward, [`gradient`] backward, each one elementwise pass
    //! (in place when the tensor owns its values). Only `f32` tensors reach it (see
    //! [`super::quick_gelu`]).
    use super::{gradient, value};
    use crate::elementwise;
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
    use burn::tensor::Tensor;

    /// QuickGELU as one operation.
    #[backend_extension(Flex, Autodiff)]
    pub trait QuickGeluBackend: Backend {
        /// `x * sigmoid(alpha * x)`, elementwise.
        fn quick_gelu(x: FloatTensor<Self>, alpha: f32) -> FloatTensor<Self>;
    }

    fn forward(x: FloatTensor<Flex>, alpha: f32) -> FloatTensor<Flex> {
        elementwise::map(x, |v| value(v, alpha))
    }

    impl QuickGeluBackend for Flex {
        fn quick_gelu(x: FloatTensor<Self>, alpha: f32) -> FloatTensor<Self> {
            forward(x, alpha)
        }
    }

    #[derive(Debug)]
    struct QuickGeluBackward;

    impl Backward<Flex, 1> for QuickGeluBackward {
        /// The input and `alpha`: the sigmoid is recomputed rather than kept.
        type State = (FloatTensor<Flex>, f32);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [node] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            if let Some(node) = node {
                let (x, alpha) = ops.state;
                let input_grad = elementwise::zip_map(grad, x, |g, v| gradient(g, v, alpha));
                grads.register::<Flex>(node.id, input_grad);
            }
        }
    }

    impl<C: CheckpointStrategy> QuickGeluBackend for Autodiff<Flex, C> {
        fn quick_gelu(x: FloatTensor<Self>, alpha: f32) -> FloatTensor<Self> {
            match QuickGeluBackward
                .prepare::<C>([x.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let x = x.into_primitive();
                    prep.finish((x.clone(), alpha), forward(x, alpha))
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive(), alpha)),
            }
        }
    }

    /// [`super::quick_gelu`] on a flex `f32` tensor.
    pub(super) fn quick_gelu<const D: usize>(x: Tensor<D>, alpha: f32) -> Tensor<D> {
        Tensor::from_dispatch(<Dispatch as QuickGeluBackend>::quick_gelu(
            x.into_dispatch(),
            alpha,
        ))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::quick_gelu;
    use crate::test_values::values;
    use burn::tensor::{Device, Tensor, TensorData, Tolerance};

    /// The generated code's form: `x * sigmoid(x * alpha)` with `alpha` unsqueezed.
    fn composed(x: Tensor<3>, alpha: Tensor<1>) -> Tensor<3> {
        let scaled = x.clone().mul(alpha.unsqueeze_dims(&[0isize, 1isize]));
        x.mul(burn::tensor::activation::sigmoid(scaled))
    }

    fn input(device: &Device) -> Tensor<3> {
        // [-8, 8): both branches of the sigmoid, and a length that splits into uneven chunks.
        let v: Vec<f32> = values(3 * 50 * 230, 5).into_iter().map(|v| 8.0 * v).collect();
        Tensor::from_data(TensorData::new(v, [3, 50, 230]), device)
    }

    /// Within 4 ulp of burn's composed form (libm's `expf`), over [-8, 8).
    #[test]
    fn values_are_the_composed_forms() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let alpha = Tensor::<1>::from_data(TensorData::from([1.702f32]), &device);
            let x = input(&device);
            let ours = quick_gelu(x.clone(), alpha.clone())
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let burns = composed(x, alpha).into_data().try_to_vec::<f32>().unwrap();
            for (a, b) in ours.iter().zip(&burns) {
                assert!((a - b).abs() <= 4.0 * f32::EPSILON * b.abs(), "{a} vs {b}");
            }
        }
    }

    /// Against `f64`'s `exp` on a grid of step 1e-4 over `[-87, 0]`: relative error at most
    /// `2^-23` (`f32::EPSILON`; 8.0e-8 measured), i.e. within 2 ulp; 0 below -87, NaN for NaN; the
    /// sigmoid saturates instead of overflowing.
    #[test]
    fn exp_within_two_ulp() {
        let worst = (0..=870_000)
            .map(|i| {
                let t = -(i as f32) * 1e-4;
                let exact = (t as f64).exp();
                ((super::exp_nonpositive(t) as f64) - exact).abs() / exact
            })
            .fold(0f64, f64::max);
        assert!(worst <= f32::EPSILON as f64, "worst relative error {worst:e}");
        assert_eq!(super::exp_nonpositive(-87.5), 0.0);
        assert_eq!(super::exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(super::exp_nonpositive(0.0), 1.0);
        assert!(super::exp_nonpositive(f32::NAN).is_nan());
        assert_eq!(super::sigmoid(100.0), 1.0);
        assert_eq!(super::sigmoid(-200.0), 0.0);
    }

    #[test]
    fn input_gradient_is_the_composed_forms() {
        let device = Device::flex().autodiff();
        let alpha = Tensor::<1>::from_data(TensorData::from([1.702f32]), &device);
        let upstream =
            Tensor::<3>::from_data(TensorData::new(values(3 * 50 * 230, 8), [3, 50, 230]), &device);
        let grad = |f: fn(Tensor<3>, Tensor<1>) -> Tensor<3>| {
            let x = input(&device).require_grad();
            let grads = (f(x.clone(), alpha.clone()) * upstream.clone()).sum().backward();
            x.grad(&grads).unwrap().into_data()
        };
        grad(quick_gelu).assert_approx_eq::<f32>(&grad(composed), Tolerance::absolute(1e-6));
    }

    /// A tracked or multi-element `alpha` takes the composed form, so its gradient exists.
    #[test]
    fn a_trained_alpha_gets_its_gradient() {
        let device = Device::flex().autodiff();
        let alpha = Tensor::<1>::from_data(TensorData::from([1.702f32]), &device).require_grad();
        let grads = quick_gelu(input(&device), alpha.clone()).sum().backward();
        assert!(alpha.grad(&grads).is_some());
    }
}
