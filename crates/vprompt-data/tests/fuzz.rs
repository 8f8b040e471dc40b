//! Mutation fuzzing of the readers (IDX, CIFAR, PNG, JPEG, CSV lists): damaged files give a
//! value or a typed error, never a panic, and no allocation beyond the decoding bound. Bounded in
//! CI; `VPROMPT_FUZZ_CASES=100000 cargo test --workspace --test fuzz` runs longer.

use std::io::Read;
use std::path::{Path, PathBuf};

use vprompt_data::*;
use vprompt_testkit::fuzz::{self, CountingAllocator};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// One allocation may hold a decoded image (the decoder's bound) plus slack.
const BOUND: usize = MAX_DECODED_BYTES as usize + (64 << 20);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn gunzip(path: PathBuf) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// All targets in one test: the allocation record is process-wide.
#[test]
fn damaged_files_give_typed_errors_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };

    // IDX: the first 20 images and labels of the fixture, uncompressed.
    let images = gunzip(fixtures().join("fashion-mnist/train-images-idx3-ubyte.gz"));
    let labels = gunzip(fixtures().join("fashion-mnist/train-labels-idx1-ubyte.gz"));
    let mut small_images = images[..16 + 20 * 784].to_vec();
    small_images[4..8].copy_from_slice(&20u32.to_be_bytes());
    let mut small_labels = labels[..8 + 20].to_vec();
    small_labels[4..8].copy_from_slice(&20u32.to_be_bytes());
    let good_labels = file("labels", &small_labels);
    let good_images = file("images", &small_images);
    read_idx(&good_images, &good_labels, &FASHION_MNIST_CLASSES).unwrap();
    fuzz::run("idx images", &small_images, 300, BOUND, |bytes| {
        read_idx(file("images", bytes), &good_labels, &FASHION_MNIST_CLASSES).is_ok()
    });
    let good_images = file("images", &small_images);
    fuzz::run("idx labels", &small_labels, 300, BOUND, |bytes| {
        read_idx(&good_images, file("labels", bytes), &FASHION_MNIST_CLASSES).is_ok()
    });

    // CIFAR records.
    let cifar = std::fs::read(fixtures().join("cifar-format/cifar10_batch.bin")).unwrap();
    let classes: Vec<String> = CIFAR10_CLASSES.iter().map(|c| c.to_string()).collect();
    fuzz::run("cifar", &cifar, 200, BOUND, |bytes| {
        read_cifar_file(file("batch.bin", bytes), CifarFormat::Cifar10, &classes).is_ok()
    });

    // PNG and JPEG.
    for name in ["cat/cat0.png", "cat/cat1.jpg"] {
        let image = std::fs::read(fixtures().join("rgb-folder").join(name)).unwrap();
        fuzz::run(name, &image, 300, BOUND, |bytes| {
            decode_image(file("image", bytes)).is_ok()
        });
    }

    // A CSV list of image paths and labels.
    let root = fixtures().join("rgb-folder");
    let csv = std::fs::read(root.join("list.csv")).unwrap();
    let names: Vec<String> = ["cat", "coffee", "rocket"].map(String::from).to_vec();
    fuzz::run("csv", &csv, 200, BOUND, |bytes| {
        csv_list(file("list.csv", bytes), &root, &names, OnError::Fail).is_ok()
    });
}
