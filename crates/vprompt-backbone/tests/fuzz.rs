//! Mutation fuzzing of the weights loaders (vprompt's `.bpk`, safetensors, PyTorch state dicts):
//! damaged files give a typed error or weights that passed every check, never a panic or an
//! allocation beyond what the file's size allows. Bounded in CI;
//! `VPROMPT_FUZZ_CASES=100000 cargo test --workspace --test fuzz` runs longer.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use vprompt_backbone::*;
use vprompt_testkit::fuzz::{self, CountingAllocator};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// The files are under 400 kB: nothing read from them may ask for more than this at once.
const BOUND: usize = 64 << 20;

fn native(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/native")
        .join(path)
}

/// All targets in one test: the allocation record is process-wide.
#[test]
fn damaged_weights_files_give_typed_errors_within_the_bound() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let write = |bytes: &[u8]| {
        let path = dir.path().join("weights");
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let bpk = dir.path().join("tiny-bit.bpk");
    convert_checkpoint(Preset::TinyBit, &native("timm-bit/model.safetensors"), &bpk).unwrap();
    for (target, preset, valid) in [
        ("bpk", Preset::TinyBit, std::fs::read(&bpk).unwrap()),
        (
            "safetensors",
            Preset::TinyBit,
            std::fs::read(native("timm-bit/model.safetensors")).unwrap(),
        ),
        (
            "pytorch",
            Preset::TinyResNet50,
            std::fs::read(native("torchvision-resnet50/resnet50.pth")).unwrap(),
        ),
    ] {
        ImageBackbone::load(preset, write(&valid), &device).unwrap();
        fuzz::run(target, &valid, 150, BOUND, |bytes| {
            ImageBackbone::load(preset, write(bytes), &device).is_ok()
        });
    }
}
