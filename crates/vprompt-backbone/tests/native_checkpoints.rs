//! The paper's backbones load from the checkpoints their own libraries write (torchvision `.pth`,
//! timm and transformers `.safetensors`, open_clip `.bin`), through the committed key maps, and
//! compute what those libraries compute.
//!
//! CI runs the loaders on reduced configs of each family (the same classes and key names at small
//! widths, random weights; `tests/fixtures/native/`, made by
//! `python scripts/native_checkpoints.py SOURCE DIR --reduced`). The same checks at full size are
//! `#[ignore]`d (the checkpoints are 100-600 MB each); run them with
//!
//! ```text
//! for s in torchvision-resnet50 torchvision-resnext timm-resnext timm-bit transformers-clip open-clip; do
//!     python scripts/native_checkpoints.py $s /tmp/native/$s
//! done
//! VPROMPT_NATIVE_DIR=/tmp/native cargo test --workspace --test native_checkpoints -- --ignored --nocapture
//! ```
//!
//! Agreement is measured as the largest difference relative to the largest reference value,
//! `max |a - b| / max |b|`, and must be below 1e-4; each check prints it.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use vprompt_backbone::*;
use vprompt_testkit::{npy, to_vec};

const TOLERANCE: f64 = 1e-4;

fn reduced(source: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/native")
        .join(source)
}

fn full(source: &str) -> PathBuf {
    let dir = std::env::var_os("VPROMPT_NATIVE_DIR").expect(
        "set VPROMPT_NATIVE_DIR to the directory of `python scripts/native_checkpoints.py SOURCE DIR/SOURCE` outputs",
    );
    PathBuf::from(dir).join(source)
}

/// `max |a - b| / max |b|`, printed and checked against [`TOLERANCE`].
#[track_caller]
fn check(label: &str, actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{label}: length");
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
    let worst = actual
        .iter()
        .zip(expected)
        .fold(0.0f64, |m, (a, b)| m.max(f64::from((a - b).abs())));
    let relative = worst / scale.max(f64::MIN_POSITIVE);
    println!("{label}: largest difference {worst:.3e}, relative {relative:.3e}");
    assert!(
        relative < TOLERANCE,
        "{label}: relative difference {relative:.3e}"
    );
    assert!(actual.iter().all(|v| v.is_finite()), "{label}: non-finite output");
}

fn image_tensor(path: &Path, device: &Device) -> Tensor<4> {
    let array = npy::read(path);
    let shape: [usize; 4] = array.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(array.to_f32(), shape), device)
}

fn checkpoint_in(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".pth") || name.ends_with(".bin") || name.ends_with(".safetensors")
        })
        .unwrap_or_else(|| panic!("no checkpoint in {}", dir.display()))
}

/// An image model: features and logits on the reference's (normalised) inputs.
fn image_model_matches(preset: Preset, dir: &Path) {
    let device = Device::flex();
    let checkpoint = checkpoint_in(dir);
    let backbone = ImageBackbone::load(preset, &checkpoint, &device)
        .unwrap_or_else(|e| panic!("{preset} from {}: {e}", checkpoint.display()));
    let input = image_tensor(&dir.join("input.npy"), &device);
    let (features, logits) = backbone.forward_features(input).unwrap();
    let label = format!("{preset} from {}", dir.file_name().unwrap().to_string_lossy());
    check(
        &format!("{label}: features"),
        &to_vec(features),
        &npy::read(dir.join("features.npy")).to_f32(),
    );
    check(
        &format!("{label}: logits"),
        &to_vec(logits),
        &npy::read(dir.join("logits.npy")).to_f32(),
    );
}

fn l2_normalized(values: &[f32], dim: usize) -> Vec<f64> {
    values
        .chunks(dim)
        .flat_map(|row| {
            let norm = row.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            row.iter().map(move |v| f64::from(*v) / norm)
        })
        .collect()
}

/// CLIP: image and text embeddings, and zero-shot logits `exp(logit_scale) * cos` with the
/// checkpoint's own scale.
fn clip_matches(image_preset: Preset, text_preset: Preset, dir: &Path) {
    let device = Device::flex();
    let checkpoint = checkpoint_in(dir);
    let label = format!("CLIP from {}", dir.file_name().unwrap().to_string_lossy());
    let image = ImageBackbone::load(image_preset, &checkpoint, &device).unwrap();
    let text = TextEncoder::load(text_preset, &checkpoint, &device).unwrap();

    let (image_embedding, _) = image
        .forward_features(image_tensor(&dir.join("image_input.npy"), &device))
        .unwrap();
    let image_embedding = to_vec(image_embedding);
    check(
        &format!("{label}: image embedding"),
        &image_embedding,
        &npy::read(dir.join("image_embedding.npy")).to_f32(),
    );

    let tokens = npy::read(dir.join("tokens.npy"));
    let ids: Vec<i64> = tokens.values.iter().map(|v| *v as i64).collect();
    let [texts, context]: [usize; 2] = tokens.shape.clone().try_into().unwrap();
    let text_embedding = to_vec(
        text.forward(Tensor::from_data(TensorData::new(ids, [texts, context]), &device))
            .unwrap(),
    );
    check(
        &format!("{label}: text embedding"),
        &text_embedding,
        &npy::read(dir.join("text_embedding.npy")).to_f32(),
    );

    // The reference set the scale to 1 / 0.07, CLIP's initial value, so that 100 would be wrong.
    let scale = text.logit_scale();
    assert!((scale - 1.0 / 0.07).abs() < 1e-3, "{label}: logit scale {scale}");
    let dim = text.output_dim();
    let (i, t) = (
        l2_normalized(&image_embedding, dim),
        l2_normalized(&text_embedding, dim),
    );
    let logits: Vec<f32> = i
        .chunks(dim)
        .flat_map(|a| {
            t.chunks(dim)
                .map(move |b| (f64::from(scale) * a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>()) as f32)
        })
        .collect();
    check(
        &format!("{label}: zero-shot logits"),
        &logits,
        &npy::read(dir.join("zero_shot_logits.npy")).to_f32(),
    );
}

#[test]
fn reduced_torchvision_resnet50_matches_torchvision() {
    image_model_matches(Preset::TinyResNet50, &reduced("torchvision-resnet50"));
}

#[test]
fn reduced_torchvision_resnext_matches_torchvision() {
    image_model_matches(Preset::TinyResNeXt, &reduced("torchvision-resnext"));
}

#[test]
fn reduced_timm_bit_matches_timm() {
    image_model_matches(Preset::TinyBit, &reduced("timm-bit"));
}

#[test]
fn reduced_transformers_clip_matches_transformers() {
    clip_matches(
        Preset::TinyVit,
        Preset::TinyClipText,
        &reduced("transformers-clip"),
    );
}

#[test]
fn reduced_open_clip_matches_open_clip() {
    clip_matches(Preset::TinyVit, Preset::TinyClipText, &reduced("open-clip"));
}

#[test]
#[ignore = "full size: python scripts/native_checkpoints.py torchvision-resnet50 $VPROMPT_NATIVE_DIR/torchvision-resnet50, then VPROMPT_NATIVE_DIR=... cargo test --workspace --test native_checkpoints -- --ignored"]
fn resnet50_matches_torchvision() {
    image_model_matches(Preset::ResNet50, &full("torchvision-resnet50"));
}

#[test]
#[ignore = "full size: python scripts/native_checkpoints.py torchvision-resnext $VPROMPT_NATIVE_DIR/torchvision-resnext, then VPROMPT_NATIVE_DIR=... cargo test --workspace --test native_checkpoints -- --ignored"]
fn resnext101_matches_torchvision() {
    image_model_matches(Preset::ResNeXt101_32x8d, &full("torchvision-resnext"));
}

#[test]
#[ignore = "full size: python scripts/native_checkpoints.py timm-resnext $VPROMPT_NATIVE_DIR/timm-resnext, then VPROMPT_NATIVE_DIR=... cargo test --workspace --test native_checkpoints -- --ignored"]
fn resnext101_wsl_matches_timm() {
    image_model_matches(Preset::ResNeXt101_32x8d, &full("timm-resnext"));
}

#[test]
#[ignore = "full size: python scripts/native_checkpoints.py timm-bit $VPROMPT_NATIVE_DIR/timm-bit, then VPROMPT_NATIVE_DIR=... cargo test --workspace --test native_checkpoints -- --ignored"]
fn bit_m_r50x1_matches_timm() {
    image_model_matches(Preset::BitMR50x1, &full("timm-bit"));
}

#[test]
#[ignore = "full size: python scripts/native_checkpoints.py transformers-clip $VPROMPT_NATIVE_DIR/transformers-clip, then VPROMPT_NATIVE_DIR=... cargo test --workspace --test native_checkpoints -- --ignored"]
fn clip_vit_b32_matches_transformers() {
    clip_matches(
        Preset::ClipVitB32Image,
        Preset::ClipVitB32Text,
        &full("transformers-clip"),
    );
}

#[test]
#[ignore = "full size: python scripts/native_checkpoints.py open-clip $VPROMPT_NATIVE_DIR/open-clip, then VPROMPT_NATIVE_DIR=... cargo test --workspace --test native_checkpoints -- --ignored"]
fn clip_vit_b32_matches_open_clip() {
    clip_matches(
        Preset::ClipVitB32Image,
        Preset::ClipVitB32Text,
        &full("open-clip"),
    );
}

/// The reduced BiT checkpoint rewritten by `edit` (a map from key to (shape, f32 values)).
fn edited_bit(
    dir: &Path,
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>),
) -> PathBuf {
    let bytes = std::fs::read(reduced("timm-bit").join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect();
    edit(&mut tensors);
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, (shape, values))| (name, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(name, shape, data)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    let path = dir.join("edited.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn load_error(path: &Path) -> String {
    ImageBackbone::load(Preset::TinyBit, path, &Device::flex())
        .unwrap_err()
        .to_string()
}

#[test]
fn a_missing_extra_or_misshaped_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // Unchanged, the rewritten file loads: the edits below are what fails.
    ImageBackbone::load(Preset::TinyBit, edited_bit(dir.path(), |_| {}), &Device::flex()).unwrap();

    let message = load_error(&edited_bit(dir.path(), |t| {
        t.remove("head.fc.bias");
    }));
    assert!(message.contains("`head.fc.bias`"), "{message}");

    let message = load_error(&edited_bit(dir.path(), |t| {
        t.insert("head.extra.weight".into(), (vec![2], vec![1.0, 2.0]));
    }));
    assert!(
        message.contains("unexpected tensor `head.extra.weight`"),
        "{message}"
    );

    let message = load_error(&edited_bit(dir.path(), |t| {
        let (shape, values) = t.get_mut("head.fc.weight").unwrap();
        *shape = vec![9, 128, 1, 1];
        values.truncate(9 * 128);
    }));
    assert!(
        message.contains("head.fc.weight") && message.contains("[9, 128, 1, 1]"),
        "{message}"
    );
}

#[test]
fn a_checkpoint_of_another_model_or_format_is_refused_with_what_to_do() {
    let device = Device::flex();
    let resnet = checkpoint_in(&reduced("torchvision-resnet50"));
    let message = ImageBackbone::load(Preset::TinyBit, &resnet, &device)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("not a checkpoint `tiny-bit` reads") && message.contains("timm"),
        "{message}"
    );
    // No key map: the preset reads only vprompt's files and ONNX exports.
    let message = ImageBackbone::load(Preset::TinyResNet, &resnet, &device)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("reads only vprompt's own weights files"),
        "{message}"
    );
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_bit.onnx");
    let message = ImageBackbone::load(Preset::TinyBit, &onnx, &device)
        .unwrap_err()
        .to_string();
    assert!(message.contains("vprompt import tiny-bit"), "{message}");
    let message = convert_checkpoint(Preset::TinyBit, &onnx, Path::new("unused.bpk"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("vprompt import"), "{message}");
}

#[test]
fn a_converted_checkpoint_loads_with_the_same_outputs_and_logit_scale() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let source = reduced("open-clip");
    let checkpoint = checkpoint_in(&source);

    let out = dir.path().join("text.bpk");
    let report = convert_checkpoint(Preset::TinyClipText, &checkpoint, &out).unwrap();
    assert_eq!(
        (report.preset, report.output.as_path()),
        (Preset::TinyClipText, out.as_path())
    );
    let tokens = npy::read(source.join("tokens.npy"));
    let ids: Vec<i64> = tokens.values.iter().map(|v| *v as i64).collect();
    let tokens =
        Tensor::<2, Int>::from_data(TensorData::new(ids, [tokens.shape[0], tokens.shape[1]]), &device);
    let direct = TextEncoder::load(Preset::TinyClipText, &checkpoint, &device).unwrap();
    let converted = TextEncoder::load(Preset::TinyClipText, &out, &device).unwrap();
    assert_eq!(converted.logit_scale(), direct.logit_scale());
    assert_eq!(
        to_vec(converted.forward(tokens.clone()).unwrap()),
        to_vec(direct.forward(tokens).unwrap())
    );

    let out = dir.path().join("bit.bpk");
    convert_checkpoint(Preset::TinyBit, &checkpoint_in(&reduced("timm-bit")), &out).unwrap();
    let input = image_tensor(&reduced("timm-bit").join("input.npy"), &device);
    let (_, logits) = ImageBackbone::load(Preset::TinyBit, &out, &device)
        .unwrap()
        .forward_features(input)
        .unwrap();
    check(
        "tiny-bit converted",
        &to_vec(logits),
        &npy::read(reduced("timm-bit").join("logits.npy")).to_f32(),
    );
}

/// A CLIP checkpoint whose config names GELU (LAION's ViT-B-32: OpenAI's tensors, another
/// activation) is refused; with QuickGELU in its config, or no config, it loads.
#[test]
fn a_clip_checkpoint_with_another_activation_is_refused() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("model.safetensors");
    std::fs::copy(checkpoint_in(&reduced("transformers-clip")), &checkpoint).unwrap();
    let config = |act: &str| {
        format!(r#"{{"vision_config": {{"hidden_act": "{act}"}}, "text_config": {{"hidden_act": "{act}"}}}}"#)
    };
    std::fs::write(dir.path().join("config.json"), config("quick_gelu")).unwrap();
    TextEncoder::load(Preset::TinyClipText, &checkpoint, &device).unwrap();
    std::fs::write(dir.path().join("config.json"), config("gelu")).unwrap();
    let message = ImageBackbone::load(Preset::TinyVit, &checkpoint, &device)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("hidden_act = \"gelu\"") && message.contains("QuickGELU"),
        "{message}"
    );

    let bin = dir.path().join("open_clip_pytorch_model.bin");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    std::fs::copy(checkpoint_in(&reduced("open-clip")), &bin).unwrap();
    std::fs::write(
        dir.path().join("open_clip_config.json"),
        r#"{"model_cfg": {"embed_dim": 16}}"#,
    )
    .unwrap();
    let message = TextEncoder::load(Preset::TinyClipText, &bin, &device)
        .unwrap_err()
        .to_string();
    assert!(message.contains("quick_gelu"), "{message}");
    std::fs::write(
        dir.path().join("open_clip_config.json"),
        r#"{"model_cfg": {"quick_gelu": true}}"#,
    )
    .unwrap();
    TextEncoder::load(Preset::TinyClipText, &bin, &device).unwrap();
}
