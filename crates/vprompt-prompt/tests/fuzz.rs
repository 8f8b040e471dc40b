//! Mutation fuzzing of the prompt file loader: a damaged `.bpk` prompt gives a typed error or a
//! prompt that passed every check, never a panic or an allocation beyond what the file's size
//! allows. Bounded in CI; `VPROMPT_FUZZ_CASES=100000 cargo test --workspace --test fuzz` runs
//! longer.

use burn::prelude::*;
use vprompt_prompt::*;
use vprompt_testkit::fuzz::{self, CountingAllocator};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

const BOUND: usize = 64 << 20;

#[test]
fn damaged_prompt_files_give_typed_errors_within_the_bound() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompt.bpk");
    for (target, config) in [
        (
            "padding",
            PromptConfig::from(PaddingPromptConfig::new(3).with_seed(1)),
        ),
        ("shrink frame", ShrinkFramePromptConfig::new(2).into()),
    ] {
        config.init([16, 16], &device).unwrap().save(&path).unwrap();
        let valid = std::fs::read(&path).unwrap();
        fuzz::run(target, &valid, 200, BOUND, |bytes| {
            std::fs::write(&path, bytes).unwrap();
            Prompt::load(&path, &device).is_ok()
        });
    }
}
