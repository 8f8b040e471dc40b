//! QuickGELU, `x * sigmoid(alpha * x)` (the CLIP towers' activation, `alpha = 1.702`), as one
//! differentiable operation.
//!
//! burn-onnx emits it as three operations: a multiplication by the constant, burn's sigmoid and a
//! multiplication by `x`. On flex the sigmoid runs on one thread (`expf` per element), and the
//! backward pass runs four elementwise passes (two products, the sigmoid's derivative, the sum)
//! while the tape keeps both `x` and the sigmoid. In the ViT-B/32 training step the sigmoid's
//! forward and backward were 11 % of the profile. [`quick_gelu`] is one parallel pass forward
//! and one backward, which keeps only `x` and recomputes the sigmoid.

use burn::tensor::Tensor;

/// `x * sigmoid(alpha * x)`, `x` of any shape and `alpha` a `[1]` constant (`[n]` broadcasts
/// along the last dim of `x`, as the generated code's `alpha.unsqueeze_dims(..)` does).
///
/// On `flex` in `f32`, with a one-element `alpha` that needs no gradient, it is one operation
/// with the values of the composed form bit for bit and the same input gradient up to rounding;
/// everywhere else it is the composed form.
pub fn quick_gelu<const D: usize>(x: Tensor<D>, alpha: Tensor<1>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if super::on_flex_f32(&x) && alpha.dims() == [1] && !alpha.is_require_grad() {
        let alpha = alpha.into_scalar::<f32>();
        return flex::quick_gelu(x, alpha);
    }
    let scaled = x.clone().mul(alpha.unsqueeze::<D>());
    x.mul(burn::tensor::activation::sigmoid(scaled))
}

/// burn-flex's sigmoid, the same formula so that the values match it exactly.
#[cfg(feature = "flex")]
#[inline]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(feature = "flex")]
/// QuickGELU of one value.
#[inline]
fn value(v: f32, alpha: f32) -> f32 {
    v * sigmoid(v * alpha)
}

#[cfg(feature = "flex")]
/// The input gradient at `x = v` from the upstream gradient `g`: `g * s + g * v * s * (1 - s) *
/// alpha` with `s = sigmoid(alpha * v)`, grouped as burn's autodiff groups the composed form's
/// two paths.
#[inline]
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

    #[test]
    fn values_are_the_composed_forms_bit_for_bit() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let alpha = Tensor::<1>::from_data(TensorData::from([1.702f32]), &device);
            let x = input(&device);
            assert_eq!(
                quick_gelu(x.clone(), alpha.clone())
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
                composed(x, alpha).into_data().try_to_vec::<f32>().unwrap()
            );
        }
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
