//! Elementwise passes over `f32` flex tensors, in parallel, and in place when the tensor owns its
//! values alone.
//!
//! In a forward pass the activation functions' inputs are used once (a convolution's output goes
//! only to its ReLU6), so writing the result over them saves allocating, and faulting in, a second
//! buffer as large as the activation; the same holds for an upstream gradient in the backward
//! pass. A tensor whose values another tensor still shares (the input the tape keeps, a residual
//! branch) gets a new buffer, exactly as before. The in-place loops run with the CPU's widest
//! vectors (`Simd`); values do not depend on it.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::TensorData;
use rayon::prelude::*;

use super::Simd;

/// Fewest elements per parallel task: 64 KiB of `f32`, large enough to amortise scheduling,
/// small enough to split the smallest Lite0 activation (`[32, 1152, 7, 7]`).
pub(crate) const CHUNK: usize = 1 << 14;

/// `f` of every value of `x` (any shape, `f32`), same shape.
pub(crate) fn map(mut x: FloatTensor<Flex>, f: impl Fn(f32) -> f32 + Sync) -> FloatTensor<Flex> {
    if let Some(values) = owned_values(&mut x) {
        let simd = Simd::detect();
        values.par_chunks_mut(CHUNK).for_each(|chunk| {
            simd.run(
                #[inline(always)]
                || chunk.iter_mut().for_each(|v| *v = f(*v)),
            )
        });
        return x;
    }
    let shape = x.shape();
    let x = x.to_contiguous();
    let values = map_slice(x.as_slice::<f32>().expect("f32 only"), f);
    FloatTensor::<Flex>::from_data(TensorData::new(values, shape))
}

/// `f(a, b)` of every pair of values of `a` and `b` (one shape, `f32`), that shape; written over
/// `a` when it owns its values.
pub(crate) fn zip_map(
    mut a: FloatTensor<Flex>,
    b: FloatTensor<Flex>,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> FloatTensor<Flex> {
    let b = b.to_contiguous();
    let b_values = b.as_slice::<f32>().expect("f32 only");
    if let Some(values) = owned_values(&mut a) {
        let simd = Simd::detect();
        let pairs = values.par_chunks_mut(CHUNK).zip(b_values.par_chunks(CHUNK));
        pairs.for_each(|(chunk, b)| {
            simd.run(
                #[inline(always)]
                || chunk.iter_mut().zip(b).for_each(|(v, &w)| *v = f(*v, w)),
            )
        });
        return a;
    }
    let shape = a.shape();
    let a = a.to_contiguous();
    let values = zip_map_slices(a.as_slice::<f32>().expect("f32 only"), b_values, f);
    FloatTensor::<Flex>::from_data(TensorData::new(values, shape))
}

/// `x`'s values, mutably, when `x` alone owns them and they are exactly its elements in order.
fn owned_values(x: &mut FloatTensor<Flex>) -> Option<&mut [f32]> {
    let n = x.shape().num_elements();
    if x.layout().contiguous_offsets() != Some((0, n)) {
        return None;
    }
    x.try_storage_mut::<f32>().filter(|values| values.len() == n)
}

/// `f` of every value, into a new vector (written once: no zero fill first).
pub(crate) fn map_slice(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    zip_map_slices(x, x, |v, _| f(v))
}

/// `f(a, b)` of every pair, into a new vector written once, chunk by chunk with the CPU's widest
/// vectors. Both slices have one length. (Collected through rayon's iterators these loops ran at
/// the SSE2 baseline: QuickGELU's forward pass in training, whose input the tape keeps, was 6 % of
/// the ViT-B/32 step.)
pub(crate) fn zip_map_slices(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "zip_map_slices: slices of one length");
    let simd = Simd::detect();
    crate::written(
        a.len(),
        CHUNK,
        || (),
        |_, i, out| {
            let range = i * CHUNK..((i + 1) * CHUNK).min(a.len());
            let (a, b) = (&a[range.clone()], &b[range]);
            simd.run(
                #[inline(always)]
                || out.write_zipped(a, b, &f),
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::{map, zip_map};
    use burn::backend::Flex;
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::TensorData;

    fn tensor(values: Vec<f32>, shape: [usize; 2]) -> FloatTensor<Flex> {
        FloatTensor::<Flex>::from_data(TensorData::new(values, shape))
    }

    fn values(t: &FloatTensor<Flex>) -> Vec<f32> {
        t.to_contiguous().as_slice::<f32>().unwrap().to_vec()
    }

    /// An owned tensor is written in place; a shared one is left as it was and the result is new;
    /// a transposed view is read in its logical order.
    #[test]
    fn in_place_only_when_owned_and_in_logical_order() {
        let owned = tensor((0..40_000).map(|i| i as f32).collect(), [200, 200]);
        let doubled = map(owned, |v| 2.0 * v);
        assert_eq!(
            values(&doubled),
            (0..40_000).map(|i| 2.0 * i as f32).collect::<Vec<_>>()
        );

        let shared = tensor(vec![1.0, 2.0, 3.0, 4.0], [2, 2]);
        let keep = shared.clone();
        let negated = map(shared, |v| -v);
        assert_eq!(values(&negated), [-1.0, -2.0, -3.0, -4.0]);
        assert_eq!(
            values(&keep),
            [1.0, 2.0, 3.0, 4.0],
            "the shared values are untouched"
        );

        let transposed = tensor(vec![1.0, 2.0, 3.0, 4.0], [2, 2]).to_contiguous();
        let transposed = Flex::float_swap_dims(transposed, 0, 1);
        assert_eq!(values(&map(transposed, |v| v + 1.0)), [2.0, 4.0, 3.0, 5.0]);
    }

    #[test]
    fn zip_map_pairs_values_in_logical_order() {
        let a = tensor(vec![1.0, 2.0, 3.0, 4.0], [2, 2]);
        let b = Flex::float_swap_dims(tensor(vec![10.0, 20.0, 30.0, 40.0], [2, 2]), 0, 1);
        let keep = a.clone();
        assert_eq!(
            values(&zip_map(a, b.clone(), |x, y| x + y)),
            [11.0, 32.0, 23.0, 44.0]
        );
        assert_eq!(values(&zip_map(keep, b, |x, y| x * y)), [10.0, 60.0, 60.0, 160.0]);
    }
}
