//! Splits, preprocessing, the cache and batching.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use vprompt_data::*;
use vprompt_testkit::npy;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fmnist() -> Splits {
    fashion_mnist(fixtures().join("fashion-mnist")).unwrap()
}

#[cfg(feature = "flex")]
#[test]
fn validation_split_is_stratified_disjoint_and_seeded() {
    let train = fmnist().train;
    let (a, valid) = train.split_validation(0.1, 42).unwrap();
    assert_eq!((a.len(), valid.len()), (900, 100));
    assert_eq!(valid.class_counts(), vec![10; 10]);
    // Disjoint and complete: compare the images themselves (they are unique in the fixture).
    let mut seen: Vec<&Vec<u8>> = a.images.iter().chain(&valid.images).map(|i| &i.pixels).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 1000);
    let (_, again) = train.split_validation(0.1, 42).unwrap();
    let (_, other) = train.split_validation(0.1, 43).unwrap();
    assert_eq!(again.images, valid.images);
    assert_ne!(other.images, valid.images);
    for fraction in [0.0, 1.0, -0.5, f64::NAN] {
        assert!(matches!(
            train.split_validation(fraction, 0),
            Err(DataError::InvalidSplit(_))
        ));
    }
}

#[cfg(feature = "flex")]
#[test]
fn few_shot_samples_n_per_class_seeded() {
    let train = fmnist().train;
    for shots in [1, 2, 4, 8, 16, 100] {
        let sample = train.few_shot(shots, 7).unwrap();
        assert_eq!(sample.class_counts(), vec![shots; 10]);
    }
    assert_eq!(
        train.few_shot(4, 7).unwrap().images,
        train.few_shot(4, 7).unwrap().images
    );
    assert_ne!(
        train.few_shot(4, 7).unwrap().images,
        train.few_shot(4, 8).unwrap().images
    );
    let err = train.few_shot(101, 0).unwrap_err();
    assert!(err.to_string().contains("fewer than 101 shots"), "{err}");
    assert!(train.few_shot(0, 0).is_err());
}

/// Upsampling 28 -> 224 is bit-exact with Pillow's bicubic and bilinear resize.
#[cfg(feature = "flex")]
#[test]
fn resize_matches_pil() {
    let train = fmnist().train.subset(&[0], "first");
    for (name, filter) in [("bicubic", Filter::Bicubic), ("bilinear", Filter::Bilinear)] {
        let expected = npy::read(fixtures().join(format!("fashion-mnist/reference-train0-{name}-224.npy")));
        let prepared = prepare(&train, &Preprocess::stretch([224, 224]).with_filter(filter)).unwrap();
        assert_eq!(prepared.channels, 1, "grey stays one plane");
        let worst = prepared
            .image(0)
            .iter()
            .zip(&expected.values)
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert_eq!(worst, 0.0, "{name}: differs from PIL by up to {worst} levels");
    }
}

/// Shrinking (27 x 24 -> 13 x 9, antialiased) matches Pillow's resize for every filter.
#[cfg(feature = "flex")]
#[test]
fn downsampling_matches_pil() {
    let cat = decode_image(fixtures().join("rgb-folder/cat/cat0.png")).unwrap();
    let data = Dataset {
        source: "cat0".into(),
        images: vec![cat],
        labels: vec![0],
        classes: vec!["cat".into()],
        skipped: vec![],
    };
    for (name, filter) in [
        ("bicubic", Filter::Bicubic),
        ("bilinear", Filter::Bilinear),
        ("nearest", Filter::Nearest),
    ] {
        let expected = npy::read(fixtures().join(format!("resize-reference/cat0-{name}-9x13.npy")));
        assert_eq!(expected.shape, [9, 13, 3]);
        let prepared = prepare(&data, &Preprocess::stretch([9, 13]).with_filter(filter)).unwrap();
        let chw = prepared.image(0);
        let mut worst = 0.0f64;
        for (k, &v) in expected.values.iter().enumerate() {
            let (y, x, c) = (k / 39, (k / 3) % 13, k % 3);
            worst = worst.max((chw[c * 117 + y * 13 + x] as f64 - v).abs());
        }
        assert!(
            worst <= 1.0,
            "{name}: differs from Pillow by up to {worst} levels"
        );
    }
}

#[cfg(feature = "flex")]
#[test]
fn centre_crop_and_rgb_layout() {
    // A 6 x 4 RGB image whose pixel (y, x) is (10y, 10x, 7).
    let pixels: Vec<u8> = (0..4)
        .flat_map(|y| (0..6).flat_map(move |x| [10 * y as u8, 10 * x as u8, 7]))
        .collect();
    let data = Dataset {
        source: "synthetic".into(),
        images: vec![RawImage {
            width: 6,
            height: 4,
            channels: 3,
            pixels,
        }],
        labels: vec![0],
        classes: vec!["a".into()],
        skipped: vec![],
    };
    // Shorter side 4 -> 4 (no resize), centre 4 x 4 crop: columns 1..5.
    let p = Preprocess::center_crop([4, 4], 4).with_filter(Filter::Nearest);
    let prepared = prepare(&data, &p).unwrap();
    assert_eq!(prepared.channels, 3);
    let image = prepared.image(0);
    let (red, green, blue) = (&image[..16], &image[16..32], &image[32..]);
    assert_eq!(&red[..4], &[0, 0, 0, 0]);
    assert_eq!(&red[12..], &[30, 30, 30, 30]);
    assert_eq!(&green[..4], &[10, 20, 30, 40]);
    assert!(blue.iter().all(|&v| v == 7));
    assert!(Preprocess::center_crop([224, 224], 200).validate().is_err());
    assert!(Preprocess::stretch([0, 224]).validate().is_err());
}

#[cfg(feature = "flex")]
#[test]
fn mixed_grey_and_rgb_become_rgb() {
    let folder = image_folder(fixtures().join("rgb-folder"), OnError::Fail).unwrap();
    let prepared = prepare(&folder, &Preprocess::center_crop([32, 32], 36)).unwrap();
    assert_eq!((prepared.len(), prepared.channels), (12, 3));
    let grey = prepared.image(7);
    let plane = 32 * 32;
    assert_eq!(
        &grey[..plane],
        &grey[plane..2 * plane],
        "grey image repeated into R, G, B"
    );
}

#[cfg(feature = "flex")]
#[test]
fn cached_preparation_equals_fresh_preparation() {
    let dir = tempfile::tempdir().unwrap();
    let test = fmnist().test;
    let p = Preprocess::stretch([56, 56]);
    let fresh = prepare(&test, &p).unwrap();
    let (first, hit) = prepare_cached(&test, &p, dir.path()).unwrap();
    assert!(!hit);
    let (second, hit) = prepare_cached(&test, &p, dir.path()).unwrap();
    assert!(hit, "the second preparation comes from the cache");
    assert_eq!(first, fresh);
    assert_eq!(second, fresh);
    // Batches cut from the cached copy equal those cut from the fresh one.
    let a = BatchLoader::new(Arc::new(fresh), 64).unwrap().shuffled(1);
    let b = BatchLoader::new(Arc::new(second), 64).unwrap().shuffled(1);
    let order = a.order(0);
    assert_eq!(a.host_batch(&order[..64]), b.host_batch(&order[..64]));
    // Another size is another key; a damaged file is rebuilt, not trusted.
    assert_ne!(
        cache_key(&test, &p),
        cache_key(&test, &Preprocess::stretch([64, 64]))
    );
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
    let (rebuilt, hit) = prepare_cached(&test, &p, dir.path()).unwrap();
    assert!(!hit);
    assert_eq!(rebuilt, first);
}

fn loader(batch: usize) -> BatchLoader {
    let data = prepare(&fmnist().test, &Preprocess::stretch([8, 8])).unwrap();
    BatchLoader::new(Arc::new(data), batch).unwrap()
}

#[cfg(feature = "flex")]
#[test]
fn shuffling_is_a_function_of_seed_and_epoch() {
    let l = loader(100).shuffled(5);
    assert_eq!(l.order(3), l.order(3));
    assert_ne!(l.order(3), l.order(4));
    assert_ne!(l.order(3), loader(100).shuffled(6).order(3));
    let mut sorted = l.order(3);
    sorted.sort();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>(), "a permutation");
    assert_eq!(
        loader(100).order(0),
        (0..1000).collect::<Vec<_>>(),
        "unshuffled: dataset order"
    );
}

/// Batches reach every device with the pixels and labels the host assembled.
fn epochs_batches_resume_and_prefetch(device: &Device) {
    let device = device.clone();
    let l = loader(96).shuffled(2);
    assert_eq!(l.batches_per_epoch(), 11);
    let full: Vec<Batch> = l.epoch(1, 0, &device).collect();
    assert_eq!(full.len(), 11);
    assert_eq!(full[10].images.dims(), [40, 3, 8, 8]);
    let visited: Vec<usize> = full.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(visited, l.order(1));
    // Resuming at batch 7 gives the same batches as the uninterrupted epoch.
    let resumed: Vec<Batch> = l.epoch(1, 7, &device).collect();
    assert_eq!(resumed.len(), 4);
    for (a, b) in resumed.iter().zip(&full[7..]) {
        assert_eq!(a.indices, b.indices);
        assert_eq!(a.images.clone().into_data(), b.images.clone().into_data());
    }
    // Prefetching and inline assembly give the same batches; dropping an iterator early is fine.
    let inline: Vec<Batch> = l.clone().prefetch(0).epoch(1, 0, &device).collect();
    assert_eq!(
        inline[3].images.clone().into_data(),
        full[3].images.clone().into_data()
    );
    drop(l.epoch(2, 0, &device).take(1).collect::<Vec<_>>());
    // Pixel values: u8 / 255, the grey plane repeated into three channels, labels as stored.
    let first = &full[0];
    let host = l.host_batch(&first.indices);
    assert_eq!(
        first.images.clone().into_data().try_into_vec_as::<f32>().unwrap(),
        host.pixels
    );
    let i = first.indices[0];
    let stored = l.data().image(i);
    assert_eq!(host.pixels[0], stored[0] as f32 / 255.0);
    assert_eq!(host.pixels[64], stored[0] as f32 / 255.0, "green = grey");
    assert_eq!(host.labels[0], l.data().labels[i] as i64);
    let dropped = loader(96).drop_last(true);
    assert_eq!(dropped.batches_per_epoch(), 10);
    assert_eq!(dropped.epoch(0, 0, &device).count(), 10);
    assert!(BatchLoader::new(l.data().clone(), 0).is_err());
}

/// Centre-cropping an image of extreme aspect ratio would resize it to gigabytes: the preparation
/// refuses it, naming the image, before allocating.
#[cfg(feature = "flex")]
#[test]
fn an_extreme_aspect_ratio_is_refused_before_allocating() {
    let dataset = Dataset {
        source: "thin".into(),
        images: vec![RawImage {
            width: 100_000,
            height: 1,
            channels: 1,
            pixels: vec![128; 100_000],
        }],
        labels: vec![0],
        classes: vec!["a".into()],
        skipped: Vec::new(),
    };
    let err = prepare(&dataset, &Preprocess::center_crop([224, 224], 256)).unwrap_err();
    assert!(
        err.to_string().contains("image 0 is 100000x1") && err.to_string().contains("MAX_RESIZED_PIXELS"),
        "{err}"
    );
    // Stretching it is bounded by the target size and works.
    let prepared = prepare(&dataset, &Preprocess::stretch([32, 32])).unwrap();
    assert_eq!(prepared.size, [32, 32]);
}

vprompt_testkit::device_tests!(epochs_batches_resume_and_prefetch);
