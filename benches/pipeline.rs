//! The input pipeline alone, at 224 x 224 from the committed Fashion-MNIST subset: one-off
//! preparation (decode + resize, in parallel) and per-epoch batching (shuffle, u8 -> f32, grey ->
//! RGB, upload, with background prefetch), in images/s. Compare with a training step
//! (`cargo bench --bench backbone`): the pipeline must never be what a step waits for.
//!
//! Run: `cargo bench --bench pipeline`.

use std::sync::Arc;

use vprompt::data::{BatchLoader, Preprocess, fashion_mnist, prepare};
use vprompt_examples::bench::{measure, print_table};
use vprompt_examples::bench_devices;

fn main() -> anyhow::Result<()> {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fashion-mnist");
    let test = fashion_mnist(dir)?.test;
    let preprocess = Preprocess::stretch([224, 224]);
    let mut rows = Vec::new();
    let mut prepared = None;
    let devices = bench_devices()?;
    // Preparation runs on the host; any device serves for `measure`'s sync.
    let host = devices[0].1.clone();
    rows.push(measure(
        "prepare 1000 images 28->224 (decoded once, resized)",
        "host",
        test.len(),
        &host,
        || {
            prepared = Some(prepare(&test, &preprocess).expect("valid"));
        },
    ));
    let data = Arc::new(prepared.expect("measured at least once"));
    for (backend, device) in devices {
        let loader = BatchLoader::new(data.clone(), 32)?.shuffled(0);
        let mut epoch = 0;
        rows.push(measure(
            "batch an epoch of 1000 (batch 32, prefetch 2)",
            &backend,
            data.len(),
            &device,
            || {
                for batch in loader.epoch(epoch, 0, &device) {
                    std::hint::black_box(batch);
                }
                epoch += 1;
            },
        ));
    }
    print_table(&rows);
    Ok(())
}
