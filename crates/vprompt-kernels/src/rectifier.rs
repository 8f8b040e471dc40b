//! ReLU and ReLU6, `max(x, 0)` and `min(max(x, 0), 6)`, each as one differentiable operation.
//!
//! Burn's autodiff has no clamp of its own: `relu(x).clamp_max(6)` records a relu (whose backward
//! masks the gradient) and a `clamp_max` (whose backward is a comparison plus a single-threaded
//! `mask_fill`). In the Lite0 training step on flex `mask_fill` alone was 10.7 % of the profile
//! after the depthwise fix, and burn-flex's clamp and relu run on one thread (the clamp 7.5 % of
//! the step). Here each is one parallel pass forward and one backward over the gradient and the
//! saved output, each written over its input when nothing else shares it
//! (`crate::elementwise`): ReLU6 for EfficientNet-Lite0, ReLU for the ResNets.

use burn::tensor::Tensor;

/// ReLU of `x`, any shape: the values and the gradient of `burn::tensor::activation::relu` (NaN
/// stays NaN and passes its gradient).
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if super::on_flex_f32(&x) {
        return flex::rectify(x, Upper::Unbounded);
    }
    burn::tensor::activation::relu(x)
}

/// ReLU6 of `x`, any shape. The values are those of `relu(x).clamp_max(6.0)` (NaN stays NaN); the
/// gradient is the upstream gradient where `0 < y < 6` (or `y` is NaN) and zero elsewhere, which is
/// also what the composed form gives away from exact ties at 0 and 6.
pub fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if super::on_flex_f32(&x) {
        return flex::rectify(x, Upper::Six);
    }
    burn::tensor::activation::relu(x).clamp_max(6.0)
}

/// Which rectifier: ReLU, or ReLU6's upper bound.
#[cfg(feature = "flex")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upper {
    /// ReLU.
    Unbounded,
    /// ReLU6.
    Six,
}

#[cfg(feature = "flex")]
impl Upper {
    /// The rectifier of one value; NaN stays NaN (as burn-flex's relu and clamp keep it).
    #[inline]
    fn value(self, v: f32) -> f32 {
        match self {
            Upper::Unbounded if v.is_nan() || v > 0.0 => v,
            Upper::Unbounded => 0.0,
            Upper::Six => v.clamp(0.0, 6.0),
        }
    }

    /// The gradient at one value given its output `y`: `g` where `y` is inside the open range
    /// (`0 < y`, `0 < y < 6`) or NaN (as burn-flex's relu keeps the gradient of a NaN), zero
    /// elsewhere.
    #[inline]
    fn gradient(self, g: f32, y: f32) -> f32 {
        let inside = match self {
            Upper::Unbounded => y > 0.0,
            Upper::Six => y > 0.0 && y < 6.0,
        };
        if inside || y.is_nan() { g } else { 0.0 }
    }
}

#[cfg(feature = "flex")]
mod flex {
    //! The backend extension: [`Upper::value`] forward, [`Upper::gradient`] backward, each one
    //! elementwise pass. Only `f32` tensors reach it (see [`super::relu`]).
    use super::Upper;
    use crate::elementwise;
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
    use burn::tensor::Tensor;

    /// ReLU (`six == false`) or ReLU6 as one operation.
    #[backend_extension(Flex, Autodiff)]
    pub trait RectifierBackend: Backend {
        /// `max(x, 0)`, or `min(max(x, 0), 6)` when `six`, elementwise.
        fn rectify(x: FloatTensor<Self>, six: bool) -> FloatTensor<Self>;
    }

    fn upper(six: bool) -> Upper {
        if six { Upper::Six } else { Upper::Unbounded }
    }

    impl RectifierBackend for Flex {
        fn rectify(x: FloatTensor<Self>, six: bool) -> FloatTensor<Self> {
            let upper = upper(six);
            elementwise::map(x, |v| upper.value(v))
        }
    }

    #[derive(Debug)]
    struct RectifierBackward;

    impl Backward<Flex, 1> for RectifierBackward {
        /// The output, whose range decides where the gradient passes, and the rectifier.
        type State = (FloatTensor<Flex>, Upper);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [node] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            if let Some(node) = node {
                let (output, upper) = ops.state;
                let input_grad = elementwise::zip_map(grad, output, |g, y| upper.gradient(g, y));
                grads.register::<Flex>(node.id, input_grad);
            }
        }
    }

    impl<C: CheckpointStrategy> RectifierBackend for Autodiff<Flex, C> {
        fn rectify(x: FloatTensor<Self>, six: bool) -> FloatTensor<Self> {
            match RectifierBackward
                .prepare::<C>([x.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let output = Flex::rectify(x.into_primitive(), six);
                    prep.finish((output.clone(), upper(six)), output)
                }
                OpsKind::UnTracked(prep) => prep.finish(Flex::rectify(x.into_primitive(), six)),
            }
        }
    }

    /// [`super::relu`] or [`super::relu6`] on a flex `f32` tensor.
    pub(super) fn rectify<const D: usize>(x: Tensor<D>, upper: Upper) -> Tensor<D> {
        let six = upper == Upper::Six;
        Tensor::from_dispatch(<Dispatch as RectifierBackend>::rectify(x.into_dispatch(), six))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    const X: [f32; 10] = [-3.0, -0.5, 0.0, 0.25, 1.0, 5.5, 5.999, 6.0, 6.5, 40.0];

    fn composed6(x: Tensor<1>) -> Tensor<1> {
        burn::tensor::activation::relu(x).clamp_max(6.0)
    }

    fn burns_relu(x: Tensor<1>) -> Tensor<1> {
        burn::tensor::activation::relu(x)
    }

    fn values(x: Tensor<1>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The input gradient of `f` at `x` for the upstream gradient `1, 2, ..., n`.
    fn gradient(f: fn(Tensor<1>) -> Tensor<1>, x: &[f32]) -> Vec<f32> {
        let device = Device::flex().autodiff();
        let n = x.len();
        let upstream =
            Tensor::<1>::from_data(TensorData::new((1..=n).map(|i| i as f32).collect(), [n]), &device);
        let x = Tensor::<1>::from_data(TensorData::new(x.to_vec(), [n]), &device).require_grad();
        let grads = (f(x.clone()) * upstream).sum().backward();
        values(x.grad(&grads).unwrap())
    }

    #[test]
    fn one_value_and_its_gradient() {
        let x = [-3.0, -0.0, 0.5, 6.0, 7.0, f32::INFINITY, f32::NEG_INFINITY];
        assert_eq!(
            x.map(|v| Upper::Six.value(v)),
            [0.0, 0.0, 0.5, 6.0, 6.0, 6.0, 0.0]
        );
        assert_eq!(
            x.map(|v| Upper::Unbounded.value(v)),
            [0.0, 0.0, 0.5, 6.0, 7.0, f32::INFINITY, 0.0]
        );
        for upper in [Upper::Six, Upper::Unbounded] {
            assert!(upper.value(f32::NAN).is_nan());
            assert_eq!(upper.gradient(2.0, f32::NAN), 2.0);
            assert_eq!(upper.gradient(2.0, 0.0), 0.0);
            assert_eq!(upper.gradient(2.0, 3.0), 2.0);
        }
        assert_eq!(Upper::Six.gradient(2.0, 6.0), 0.0);
        assert_eq!(Upper::Unbounded.gradient(2.0, 6.0), 2.0);
    }

    /// ReLU6's values and gradients equal the composed `relu(x).clamp_max(6)` on flex, with and
    /// without autodiff, away from the ties at exactly 0 and 6 (where the composed form's gradient
    /// depends on how each op breaks them); a long input crosses the parallel chunks.
    #[test]
    fn relu6_matches_relu_then_clamp_max() {
        let long: Vec<f32> = (0..50_001).map(|i| (i % 17) as f32 - 5.5).collect();
        for device in [Device::flex(), Device::flex().autodiff()] {
            for x in [X.to_vec(), long.clone()] {
                let x = Tensor::<1>::from_data(TensorData::new(x.clone(), [x.len()]), &device);
                assert_eq!(values(relu6(x.clone())), values(composed6(x)));
            }
        }
        let away_from_ties: Vec<f32> = X.into_iter().filter(|&x| x != 0.0 && x != 6.0).collect();
        assert_eq!(
            gradient(relu6, &away_from_ties),
            gradient(composed6, &away_from_ties)
        );
        assert_eq!(gradient(relu6, &long), gradient(composed6, &long));
    }

    /// ReLU's values and gradients are burn-flex's bit for bit, ties, NaN and signed zeros
    /// included.
    #[test]
    fn relu_is_burns_relu() {
        let mut x: Vec<f32> = (0..50_001).map(|i| (i % 13) as f32 - 6.0).collect();
        x.extend([-0.0, 0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        for device in [Device::flex(), Device::flex().autodiff()] {
            let t = Tensor::<1>::from_data(TensorData::new(x.clone(), [x.len()]), &device);
            let (ours, burns) = (values(relu(t.clone())), values(burns_relu(t)));
            assert!(ours.iter().zip(&burns).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        let (ours, burns) = (gradient(relu, &x), gradient(burns_relu, &x));
        assert!(ours.iter().zip(&burns).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
