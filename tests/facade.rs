//! End-to-end through the facade crate: a run config names a template, the prelude builds it, and a
//! saved prompt reloads into the same outputs.

use vprompt::prelude::*;

#[test]
fn config_file_to_saved_prompt_and_back() -> vprompt::Result<()> {
    let device = Device::flex();
    let config = PromptConfig::from_json(r#"{"RandomPatch": {"size": 16, "seed": 3}}"#)?;
    let prompt = config.init([64, 48], &device)?;
    assert_eq!(prompt.num_params(), 3 * 16 * 16);

    let dir = std::env::temp_dir().join(format!("vprompt-facade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prompt.bpk");
    prompt.save(&path)?;
    let loaded = Prompt::load(&path, &device)?;
    let images = Tensor::<4>::ones([2, 3, 64, 48], &device);
    for step in 0..4 {
        let phase = Phase::Train { step };
        let a = prompt.apply(images.clone(), phase)?.into_data();
        let b = loaded.apply(images.clone(), phase)?.into_data();
        assert_eq!(a, b);
    }
    // A typed error converts into the facade's error.
    let err: vprompt::Error = PaddingPromptConfig::new(40)
        .init([64, 48], &device)
        .unwrap_err()
        .into();
    assert!(
        err.to_string().contains("largest frame for this image is 23"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    Ok(())
}
