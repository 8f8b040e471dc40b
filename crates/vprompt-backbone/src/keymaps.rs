//! The committed key maps: how each preset's generated tensors are read from the checkpoints of
//! the libraries that publish its weights (`keymaps/<preset>/<source>.json`, derived by
//! `vprompt-codegen keymap` from an export of the same architecture; see
//! [`checkpoint`](crate::checkpoint)).

use crate::checkpoint::KeyMap;
use crate::preset::Preset;

/// The JSON texts of `preset`'s key maps, most common source first.
fn texts(preset: Preset) -> &'static [&'static str] {
    macro_rules! maps {
        ($preset:literal: $($source:literal),+) => {
            &[$(include_str!(concat!("../keymaps/", $preset, "/", $source, ".json"))),+]
        };
    }
    match preset {
        Preset::ResNet50 => maps!("resnet50": "torchvision"),
        Preset::ResNeXt101_32x8d => maps!("resnext101-32x8d": "torchvision"),
        Preset::BitMR50x1 => maps!("bit-m-r50x1": "timm"),
        Preset::ClipVitB32Image => maps!("clip-vit-b32-image": "transformers", "open_clip"),
        Preset::ClipVitB32Text => maps!("clip-vit-b32-text": "transformers", "open_clip"),
        Preset::TinyResNet50 => maps!("tiny-resnet50": "torchvision"),
        Preset::TinyResNeXt => maps!("tiny-resnext": "torchvision"),
        Preset::TinyBit => maps!("tiny-bit": "timm"),
        Preset::TinyVit => maps!("tiny-vit": "transformers", "open_clip"),
        Preset::TinyClipText => maps!("tiny-clip-text": "transformers", "open_clip"),
        Preset::EfficientNetLite0 | Preset::ResNet18 | Preset::TinyResNet => &[],
    }
}

/// `preset`'s key maps (none for presets that load only vprompt's own weights files).
pub fn for_preset(preset: Preset) -> Vec<KeyMap> {
    texts(preset)
        .iter()
        .map(|text| serde_json::from_str(text).expect("the committed key maps parse"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_committed_key_map_parses() {
        for preset in crate::Preset::ALL {
            for map in super::for_preset(preset) {
                assert!(!map.tensors.is_empty(), "{preset}: {}", map.source);
            }
        }
    }
}
