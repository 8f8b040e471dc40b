//! Batches cut from a prepared dataset: seeded shuffling that is a pure function of (seed, epoch),
//! so a resumed run sees the same batches, and a background thread that assembles the next
//! batches while the current one trains.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

use crate::error::{DataError, Result};
use crate::prepare::PreparedDataset;

/// One batch on a device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Pixels in `[0, 1]`, RGB.
    ///
    /// # Shapes
    /// `[batch, 3, height, width]`
    pub images: Tensor<4>,
    /// Labels, `[batch]`.
    pub labels: Tensor<1, Int>,
    /// Positions of the batch's images in the dataset.
    pub indices: Vec<usize>,
}

/// A batch assembled on the host, before it is put on a device.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// `batch * 3 * height * width` values in `[0, 1]`.
    pub pixels: Vec<f32>,
    /// One label per image.
    pub labels: Vec<i64>,
    /// Positions of the batch's images in the dataset.
    pub indices: Vec<usize>,
}

/// Cuts batches from a prepared dataset.
#[derive(Debug, Clone)]
pub struct BatchLoader {
    data: Arc<PreparedDataset>,
    batch_size: usize,
    shuffle: Option<u64>,
    drop_last: bool,
    prefetch: usize,
}

impl BatchLoader {
    /// Batches of `batch_size` images in dataset order, the last one possibly smaller, two batches
    /// prefetched.
    pub fn new(data: Arc<PreparedDataset>, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::InvalidConfig(
                "the batch size must be at least 1".into(),
            ));
        }
        if data.is_empty() {
            return Err(DataError::Empty {
                what: data.source.clone(),
            });
        }
        Ok(Self {
            data,
            batch_size,
            shuffle: None,
            drop_last: false,
            prefetch: 2,
        })
    }

    /// Shuffles each epoch with a permutation drawn from `(seed, epoch)`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self
    }

    /// Leaves out a last, smaller batch.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }

    /// Number of batches assembled ahead in the background (0: assemble on demand, in the caller's
    /// thread).
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches;
        self
    }

    /// The dataset.
    pub fn data(&self) -> &Arc<PreparedDataset> {
        &self.data
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Number of batches in an epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.data.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The order in which `epoch` visits the dataset.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.data.len()).collect();
        if let Some(seed) = self.shuffle {
            // A separate stream per epoch: resuming at epoch k needs no replay of epochs 0..k.
            let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            order.shuffle(&mut rng);
        }
        order
    }

    /// Assembles the batch of the given dataset positions on the host.
    pub fn host_batch(&self, indices: &[usize]) -> HostBatch {
        host_batch(&self.data, indices)
    }

    /// The batches of `epoch`, starting at batch `start` (to resume mid-epoch), on `device`.
    pub fn epoch(&self, epoch: u64, start: usize, device: &Device) -> BatchIter {
        let order = self.order(epoch);
        let mut chunks: Vec<Vec<usize>> = order.chunks(self.batch_size).map(<[usize]>::to_vec).collect();
        if self.drop_last && chunks.last().is_some_and(|c| c.len() < self.batch_size) {
            chunks.pop();
        }
        let chunks: Vec<Vec<usize>> = chunks.into_iter().skip(start).collect();
        let size = self.data.size;
        let source = if self.prefetch == 0 {
            Source::Inline {
                data: self.data.clone(),
                chunks: chunks.into_iter(),
            }
        } else {
            let (sender, receiver) = sync_channel(self.prefetch);
            let data = self.data.clone();
            let worker = std::thread::Builder::new()
                .name("vprompt-batches".into())
                .spawn(move || produce(&data, chunks, sender))
                .expect("spawning the batch thread");
            Source::Prefetch {
                receiver,
                worker: Some(worker),
            }
        };
        BatchIter {
            source,
            size,
            device: device.clone(),
        }
    }
}

fn produce(data: &PreparedDataset, chunks: Vec<Vec<usize>>, sender: SyncSender<HostBatch>) {
    for chunk in chunks {
        if sender.send(host_batch(data, &chunk)).is_err() {
            return; // the iterator was dropped
        }
    }
}

fn host_batch(data: &PreparedDataset, indices: &[usize]) -> HostBatch {
    let plane = data.size[0] * data.size[1];
    let mut pixels = Vec::with_capacity(indices.len() * 3 * plane);
    for &i in indices {
        let image = data.image(i);
        for c in 0..3 {
            let stored = if data.channels == 1 { 0 } else { c };
            pixels.extend(
                image[stored * plane..(stored + 1) * plane]
                    .iter()
                    .map(|&v| f32::from(v) / 255.0),
            );
        }
    }
    HostBatch {
        pixels,
        labels: indices.iter().map(|&i| data.labels[i] as i64).collect(),
        indices: indices.to_vec(),
    }
}

enum Source {
    Inline {
        data: Arc<PreparedDataset>,
        chunks: std::vec::IntoIter<Vec<usize>>,
    },
    Prefetch {
        receiver: Receiver<HostBatch>,
        worker: Option<JoinHandle<()>>,
    },
}

/// The batches of one epoch; see [`BatchLoader::epoch`].
pub struct BatchIter {
    source: Source,
    size: [usize; 2],
    device: Device,
}

impl Iterator for BatchIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let host = match &mut self.source {
            Source::Inline { data, chunks } => host_batch(data, &chunks.next()?),
            Source::Prefetch { receiver, .. } => receiver.recv().ok()?,
        };
        let n = host.labels.len();
        let [h, w] = self.size;
        Some(Batch {
            images: Tensor::from_data(TensorData::new(host.pixels, [n, 3, h, w]), &self.device),
            labels: Tensor::from_data(TensorData::new(host.labels, [n]), &self.device),
            indices: host.indices,
        })
    }
}

impl Drop for BatchIter {
    fn drop(&mut self) {
        if let Source::Prefetch { receiver, worker } = &mut self.source {
            // Disconnect first so a worker blocked on a full channel wakes up and stops.
            drop(std::mem::replace(receiver, sync_channel(0).1));
            if let Some(worker) = worker.take() {
                let _ = worker.join();
            }
        }
    }
}
