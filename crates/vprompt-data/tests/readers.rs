//! Every reader against known counts and pixel values, and every kind of bad input.

use std::path::{Path, PathBuf};

use vprompt_data::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Debian's `dataset-fashion-mnist` (installed by `.ci/run`).
const DEBIAN_FMNIST: &str = "/usr/share/datasets/fashion-mnist";

#[test]
fn fashion_mnist_fixture_counts_labels_and_pixels() {
    let splits = fashion_mnist(fixtures().join("fashion-mnist")).unwrap();
    assert_eq!((splits.train.len(), splits.test.len()), (1000, 1000));
    assert_eq!(splits.train.class_counts(), vec![100; 10]);
    assert_eq!(splits.test.class_counts(), vec![100; 10]);
    assert_eq!(&splits.train.labels[..5], &[9, 0, 0, 3, 0]);
    assert_eq!(&splits.test.labels[..5], &[9, 2, 1, 1, 6]);
    assert_eq!(splits.train.classes[9], "Ankle boot");
    let first = &splits.train.images[0];
    assert_eq!((first.width, first.height, first.channels), (28, 28, 1));
    assert_eq!(first.pixels.iter().map(|&v| v as u64).sum::<u64>(), 76_247);
    assert_eq!(
        &first.pixels[14 * 28..15 * 28],
        &[
            0, 0, 1, 4, 6, 7, 2, 0, 0, 0, 0, 0, 237, 226, 217, 223, 222, 219, 222, 221, 216, 223, 229, 215,
            218, 255, 77, 0
        ]
    );
    assert_eq!(
        splits.train.images[999]
            .pixels
            .iter()
            .map(|&v| v as u64)
            .sum::<u64>(),
        84_155
    );
}

/// Needs Debian's full Fashion-MNIST; `.ci/run` installs it and runs this test with
/// `cargo test --workspace --test readers -- --ignored`.
#[test]
#[ignore = "needs Debian's dataset-fashion-mnist: apt-get install dataset-fashion-mnist, then \
            cargo test --workspace --test readers -- --ignored"]
fn debian_fashion_mnist_is_the_official_set_and_contains_the_fixture() {
    let full = fashion_mnist(DEBIAN_FMNIST)
        .unwrap_or_else(|e| panic!("{e}\n(install it: apt-get install dataset-fashion-mnist)"));
    assert_eq!((full.train.len(), full.test.len()), (60_000, 10_000));
    assert_eq!(full.train.class_counts(), vec![6000; 10]);
    assert_eq!(full.test.class_counts(), vec![1000; 10]);
    let fixture = fashion_mnist(fixtures().join("fashion-mnist")).unwrap();
    for (split, part, file) in [
        ("train", &full.train, &fixture.train),
        ("test", &full.test, &fixture.test),
    ] {
        let indices =
            std::fs::read_to_string(fixtures().join(format!("fashion-mnist/{split}-source-indices.txt")))
                .unwrap();
        for (k, index) in indices.lines().enumerate() {
            let index: usize = index.parse().unwrap();
            assert_eq!(file.images[k], part.images[index], "{split} fixture image {k}");
            assert_eq!(file.labels[k], part.labels[index]);
        }
    }
}

#[test]
fn cifar_binary_formats() {
    let dir = fixtures().join("cifar-format");
    let classes: Vec<String> = CIFAR10_CLASSES.iter().map(|c| c.to_string()).collect();
    let path = dir.join("cifar10_batch.bin");
    let raw = std::fs::read(&path).unwrap();
    let data = read_cifar_file(&path, CifarFormat::Cifar10, &classes).unwrap();
    assert_eq!(data.len(), 5);
    for (k, image) in data.images.iter().enumerate() {
        let record = &raw[k * 3073..(k + 1) * 3073];
        assert_eq!(data.labels[k], record[0] as usize);
        assert_eq!((image.width, image.height, image.channels), (32, 32, 3));
        // Pixel (row 3, column 5): planes R, G, B in the file, interleaved in the image.
        let p = 3 * 32 + 5;
        assert_eq!(
            &image.pixels[3 * p..3 * p + 3],
            &[record[1 + p], record[1 + 1024 + p], record[1 + 2048 + p]]
        );
    }
    let fine: Vec<String> = (0..100).map(|i| format!("class{i}")).collect();
    let path = dir.join("cifar100_train.bin");
    let raw = std::fs::read(&path).unwrap();
    let data = read_cifar_file(&path, CifarFormat::Cifar100, &fine).unwrap();
    assert_eq!(data.len(), 5);
    for k in 0..5 {
        assert_eq!(
            data.labels[k],
            raw[k * 3074 + 1] as usize,
            "the fine label is the second byte"
        );
    }
    // A CIFAR-100 file read as CIFAR-10 is not a whole number of records.
    let err = read_cifar_file(&path, CifarFormat::Cifar10, &classes).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err}");
    assert!(err.to_string().contains("cifar100_train.bin"));
}

#[test]
fn image_folder_and_csv_list_agree() {
    let dir = fixtures().join("rgb-folder");
    let folder = image_folder(&dir, OnError::Fail).unwrap();
    assert_eq!(folder.classes, ["cat", "coffee", "rocket"]);
    assert_eq!(folder.class_counts(), [4, 4, 4]);
    assert!(folder.skipped.is_empty());
    let grey: Vec<usize> = folder
        .images
        .iter()
        .enumerate()
        .filter(|(_, i)| i.channels == 1)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(grey, [7], "coffee3.jpg is greyscale");
    let decoded = decode_image(dir.join("cat/cat0.png")).unwrap();
    assert_eq!(folder.images[0], decoded);
    assert_eq!(decoded.pixels.len(), decoded.width * decoded.height * 3);

    let list = csv_list(dir.join("list.csv"), &dir, &folder.classes, OnError::Fail).unwrap();
    assert_eq!(list.labels, folder.labels);
    assert_eq!(list.images, folder.images);
}

fn temp_copy_of_folder() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("rgb-folder");
    for class in ["cat", "coffee"] {
        std::fs::create_dir(tmp.path().join(class)).unwrap();
        for k in 0..2 {
            let name = format!("{class}{k}.{}", if k % 2 == 1 { "jpg" } else { "png" });
            std::fs::copy(src.join(class).join(&name), tmp.path().join(class).join(&name)).unwrap();
        }
    }
    tmp
}

#[test]
fn bad_image_files_are_named_or_skipped() {
    let tmp = temp_copy_of_folder();
    // A truncated PNG and a text file pretending to be a JPEG.
    let png = std::fs::read(tmp.path().join("cat/cat0.png")).unwrap();
    std::fs::write(tmp.path().join("cat/broken.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(tmp.path().join("coffee/notes.jpg"), "not an image").unwrap();
    let err = image_folder(tmp.path(), OnError::Fail).unwrap_err();
    assert!(
        matches!(err, DataError::Decode { ref path, .. } if path.ends_with("cat/broken.png")),
        "{err}"
    );

    let skipped = image_folder(tmp.path(), OnError::Skip).unwrap();
    assert_eq!(skipped.len(), 4);
    let names: Vec<String> = skipped
        .skipped
        .iter()
        .map(|s| s.path.file_name().unwrap().to_string_lossy().into())
        .collect();
    assert_eq!(names, ["broken.png", "notes.jpg"]);

    // An empty class folder is always an error, naming the folder.
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    let err = image_folder(tmp.path(), OnError::Skip).unwrap_err();
    assert!(
        matches!(err, DataError::EmptyClass { ref path } if path.ends_with("empty")),
        "{err}"
    );

    let err = image_folder("/nonexistent/folder", OnError::Fail).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
}

#[test]
fn bad_csv_lists_are_named() {
    let tmp = temp_copy_of_folder();
    let classes = vec!["cat".to_string(), "coffee".to_string()];
    let cases = [
        ("path,label\ncat/cat0.png,0\ncat/cat1.jpg,7\n", "label 7"),
        ("cat/cat0.png,zero\n", "line 1"),
        ("cat/cat0.png\n", "expected `path,label`"),
        ("cat/missing.png,0\n", "missing.png"),
    ];
    for (text, needle) in cases {
        let list = tmp.path().join("list.csv");
        std::fs::write(&list, text).unwrap();
        let err = csv_list(&list, tmp.path(), &classes, OnError::Fail).unwrap_err();
        assert!(err.to_string().contains(needle), "{text:?}: {err}");
    }
    let list = tmp.path().join("list.csv");
    std::fs::write(&list, "cat/cat0.png,0\ncat/missing.png,0\n").unwrap();
    let data = csv_list(&list, tmp.path(), &classes, OnError::Skip).unwrap();
    assert_eq!((data.len(), data.skipped.len()), (1, 1));
}

/// Raw (uncompressed) IDX is accepted as well as gzip.
fn write_raw(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_idx_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    let labels = tmp.path().join("labels");
    let idx_images = |magic: u32, n: u32, rows: u32, cols: u32, data: usize| {
        let mut b = Vec::new();
        for w in [magic, n, rows, cols] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b.extend(std::iter::repeat_n(7u8, data));
        b
    };
    let idx_labels = |magic: u32, values: &[u8]| {
        let mut b = Vec::new();
        b.extend_from_slice(&magic.to_be_bytes());
        b.extend_from_slice(&(values.len() as u32).to_be_bytes());
        b.extend_from_slice(values);
        b
    };
    let classes = FASHION_MNIST_CLASSES;
    let check = |img: Vec<u8>, lab: Vec<u8>, needle: &str| {
        write_raw(&images, &img);
        write_raw(&labels, &lab);
        let err = read_idx(&images, &labels, &classes).unwrap_err();
        assert!(err.to_string().contains(needle), "expected `{needle}` in: {err}");
    };
    check(
        idx_images(0x801, 2, 2, 2, 8),
        idx_labels(0x801, &[1, 2]),
        "magic number is 0x00000801",
    );
    check(
        idx_images(0x803, 3, 2, 2, 8),
        idx_labels(0x801, &[1, 2, 3]),
        "promises 3 images",
    );
    check(
        idx_images(0x803, 2, 0, 2, 0),
        idx_labels(0x801, &[1, 2]),
        "empty side",
    );
    check(
        idx_images(0x803, 2, 2, 2, 8),
        idx_labels(0x801, &[1, 2, 3]),
        "holds 2 images but",
    );
    check(
        idx_images(0x803, 2, 2, 2, 8),
        idx_labels(0x801, &[1, 12]),
        "label 12",
    );
    check(
        idx_images(0x803, 2, 2, 2, 8),
        idx_labels(0x803, &[1, 2]),
        "labels",
    );
    check(vec![0, 0], idx_labels(0x801, &[1, 2]), "too short");
    // Sizes whose product overflows: named as a damaged header, not as an empty file.
    check(
        idx_images(0x803, u32::MAX, u32::MAX, u32::MAX, 8),
        idx_labels(0x801, &[1, 2]),
        "more bytes than any file can hold",
    );
    // A damaged gzip stream.
    let good = std::fs::read(fixtures().join("fashion-mnist/train-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(&images, &good[..good.len() / 2]).unwrap();
    let err = read_idx(
        &images,
        fixtures().join("fashion-mnist/train-labels-idx1-ubyte.gz"),
        &classes,
    )
    .unwrap_err();
    assert!(err.to_string().contains("gzip"), "{err}");
    // And a valid pair reads.
    write_raw(&images, &idx_images(0x803, 2, 2, 2, 8));
    write_raw(&labels, &idx_labels(0x801, &[1, 2]));
    assert_eq!(read_idx(&images, &labels, &classes).unwrap().labels, [1, 2]);
    let err = fashion_mnist(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
}

/// Train and test folders must name the same classes in the same order: labels index the class
/// list, so a class only in test, a renamed class or another order is an error naming it.
#[test]
fn splits_with_other_classes_are_refused() {
    let train = image_folder(fixtures().join("rgb-folder"), OnError::Fail).unwrap();
    let renamed = temp_copy_of_folder();
    std::fs::rename(renamed.path().join("coffee"), renamed.path().join("tea")).unwrap();
    let test = image_folder(renamed.path(), OnError::Fail).unwrap();
    let err = Splits::new(train.clone(), test).unwrap_err().to_string();
    assert!(
        err.contains("has `coffee`, `rocket`") && err.contains("has `tea`"),
        "{err}"
    );

    let mut reordered = train.clone();
    reordered.classes.swap(0, 1);
    let err = Splits::new(train.clone(), reordered).unwrap_err().to_string();
    assert!(err.contains("another order") && err.contains("label 0"), "{err}");

    let splits = Splits::new(train.clone(), train).unwrap();
    assert_eq!(splits.train.classes, splits.test.classes);
}

/// A class-names file with too few or too many names is named itself, not blamed on the first
/// batch file's labels.
#[test]
fn a_short_cifar_names_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("batches.meta.txt"),
        "airplane\nautomobile\nbird\n",
    )
    .unwrap();
    let err = cifar10(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("batches.meta.txt") && err.contains("names 3 classes, the dataset has 10"),
        "{err}"
    );
    std::fs::write(tmp.path().join("fine_label_names.txt"), "apple\n").unwrap();
    let err = cifar100(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("fine_label_names.txt") && err.contains("has 100"),
        "{err}"
    );
}

/// A JPEG cut to a third is an error (or a counted skip), not an image of made-up grey pixels;
/// the whole file still decodes.
#[test]
fn a_truncated_jpeg_is_refused() {
    let tmp = temp_copy_of_folder();
    let jpeg = std::fs::read(tmp.path().join("cat/cat1.jpg")).unwrap();
    decode_image(tmp.path().join("cat/cat1.jpg")).unwrap();
    std::fs::write(tmp.path().join("cat/cut.jpg"), &jpeg[..jpeg.len() * 35 / 100]).unwrap();
    let err = decode_image(tmp.path().join("cat/cut.jpg")).unwrap_err();
    assert!(err.to_string().contains("truncated JPEG"), "{err}");
    let skipped = image_folder(tmp.path(), OnError::Skip).unwrap();
    assert_eq!(skipped.skipped.len(), 1);
    assert!(skipped.skipped[0].path.ends_with("cat/cut.jpg"));
}

/// CRC-32 (PNG's chunk checksum), bitwise.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG of a few dozen bytes whose header claims 60,000 x 60,000 RGB pixels (10 GB) is an
/// error naming the file, before anything that size is allocated.
#[test]
fn a_tiny_file_claiming_a_huge_image_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&60_000u32.to_be_bytes());
    ihdr.extend_from_slice(&60_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // A few bytes of image data: the decoder reads up to here before it sizes its buffer.
    let idat = b"IDAT\x78\x9c\x03\x00";
    png.extend_from_slice(&4u32.to_be_bytes());
    png.extend_from_slice(idat);
    png.extend_from_slice(&crc32(idat).to_be_bytes());
    png.extend_from_slice(&0u32.to_be_bytes());
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    let path = tmp.path().join("huge.png");
    std::fs::write(&path, &png).unwrap();
    let err = decode_image(&path).unwrap_err();
    assert!(
        matches!(err, DataError::Decode { ref path, .. } if path.ends_with("huge.png"))
            && err.to_string().to_lowercase().contains("limit"),
        "{err}"
    );
}
