//! A linear layer on an input of any rank as one matrix product.
//!
//! burn's `Linear::forward` on `[a, b, d_in]` keeps the batched form when `b` is a multiple of
//! its row tile (burn-std's `MatmulTransformPolicy`), and burn-flex then runs `a` separate gemms
//! of `[b, d_in] x [d_in, d_out]`, packing the same weight again for each. The CLIP ViT image
//! tower meets this in every block's attention input projection, applied to `[50, batch, 768]`
//! (tokens first): 50 products of 32 rows each at batch 32, forward and again for the input
//! gradient. [`linear`] folds the leading dims into the rows, so the layer is one
//! `[a * b, d_in] x [d_in, d_out]` product (after a copy when the input is a permuted view).

use burn::nn::Linear;
use burn::tensor::Tensor;

/// `linear.forward(x)` for `x` `[..., d_in]` (rank `D`), returning `[..., d_out]`: on `flex`
/// in `f32` with rank 3 or more, computed as one `[rows, d_in]` product reshaped back; elsewhere
/// (other devices, rank 1 and 2) exactly `linear.forward(x)`.
pub fn linear<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if D > 2 && super::on_flex_f32(&x) {
        let dims = x.dims();
        let rows = dims[..D - 1].iter().product::<usize>();
        let output = linear.forward(x.reshape([rows, dims[D - 1]]));
        let mut out_dims = dims;
        out_dims[D - 1] = output.dims()[1];
        return output.reshape(out_dims);
    }
    linear.forward(x)
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::linear;
    use crate::test_values::values;
    use burn::nn::LinearConfig;
    use burn::tensor::{Device, Tensor, TensorData, Tolerance};

    /// A `[50, 4, 16]` input permuted from `[4, 50, 16]` (as the ViT's tokens-first blocks see
    /// it), through a 16 -> 24 layer: the folded product gives burn's batched values and the same
    /// input and weight gradients.
    #[test]
    fn folds_leading_dims_with_burns_values_and_gradients() {
        let device = Device::flex().autodiff();
        let layer = LinearConfig::new(16, 24).init(&device);
        let input = || {
            Tensor::<3>::from_data(TensorData::new(values(4 * 50 * 16, 3), [4, 50, 16]), &device)
                .require_grad()
        };
        let (a, b) = (input(), input());
        let ours = linear(&layer, a.clone().permute([1, 0, 2]));
        let burns = layer.forward(b.clone().permute([1, 0, 2]));
        assert_eq!(ours.dims(), [50, 4, 24]);
        ours.to_data()
            .assert_approx_eq::<f32>(&burns.to_data(), Tolerance::absolute(1e-5));
        let weights = Tensor::<3>::from_data(TensorData::new(values(50 * 4 * 24, 9), [50, 4, 24]), &device);
        let grads_ours = (ours * weights.clone()).sum().backward();
        let grads_burns = (burns * weights).sum().backward();
        a.grad(&grads_ours).unwrap().to_data().assert_approx_eq::<f32>(
            &b.grad(&grads_burns).unwrap().to_data(),
            Tolerance::absolute(1e-5),
        );
        let w_ours = layer.weight.grad(&grads_ours).unwrap();
        let w_burns = layer.weight.grad(&grads_burns).unwrap();
        w_ours
            .to_data()
            .assert_approx_eq::<f32>(&w_burns.to_data(), Tolerance::absolute(1e-4));
    }

    /// Rank 2 and other devices take `Linear::forward` itself.
    #[test]
    fn rank_two_is_linear_forward() {
        let device = Device::flex();
        let layer = LinearConfig::new(8, 3).init(&device);
        let x = Tensor::<2>::from_data(TensorData::new(values(5 * 8, 1), [5, 8]), &device);
        assert_eq!(linear(&layer, x.clone()).to_data(), layer.forward(x).to_data());
    }
}
