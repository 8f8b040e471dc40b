//! Every invalid config is refused with a typed error before any tensor is allocated; nothing
//! panics.

use burn::prelude::*;
use vprompt_prompt::*;

fn err(config: impl Into<PromptConfig>, size: [usize; 2]) -> PromptError {
    let config = config.into();
    let validated = config.validate(size).unwrap_err();
    let init = config.init(size, &Device::flex()).unwrap_err();
    assert_eq!(validated.to_string(), init.to_string(), "validate and init agree");
    init
}

#[test]
fn zero_sizes() {
    let e = err(PaddingPromptConfig::new(0), [224, 224]);
    assert!(
        matches!(
            e,
            PromptError::ZeroSize {
                template: "padding",
                field: "pad"
            }
        ),
        "{e}"
    );
    let e = err(FixedPatchPromptConfig::new(0), [224, 224]);
    assert!(matches!(e, PromptError::ZeroSize { field: "size", .. }), "{e}");
    let e = err(RandomPatchPromptConfig::new(0), [224, 224]);
    assert!(matches!(e, PromptError::ZeroSize { field: "size", .. }), "{e}");
    let e = err(ShrinkFramePromptConfig::new(0), [224, 224]);
    assert!(matches!(e, PromptError::ZeroSize { field: "pad", .. }), "{e}");
    let e = err(PaddingPromptConfig::new(3).with_channels(0), [224, 224]);
    assert!(
        matches!(
            e,
            PromptError::ZeroSize {
                field: "channels",
                ..
            }
        ),
        "{e}"
    );
    let e = err(FullImagePromptConfig::new(), [0, 224]);
    assert!(
        matches!(
            e,
            PromptError::EmptyImage {
                height: 0,
                width: 224,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn frames_that_leave_no_image() {
    let e = err(PaddingPromptConfig::new(112), [224, 224]);
    assert!(
        matches!(
            e,
            PromptError::FrameTooWide {
                pad: 112,
                max_pad: 111,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("largest frame for this image is 111"),
        "{e}"
    );
    // Non-square: the short side decides.
    let e = err(PaddingPromptConfig::new(40), [224, 80]);
    assert!(matches!(e, PromptError::FrameTooWide { max_pad: 39, .. }), "{e}");
    assert!(PaddingPromptConfig::new(39).validate([224, 80]).is_ok());
    let e = err(ShrinkFramePromptConfig::new(5), [10, 30]);
    assert!(matches!(e, PromptError::FrameTooWide { .. }), "{e}");
}

#[test]
fn patches_that_do_not_fit() {
    let e = err(FixedPatchPromptConfig::new(225), [224, 224]);
    assert!(
        matches!(e, PromptError::PatchOutOfBounds { size: 225, .. }),
        "{e}"
    );
    let e = err(
        FixedPatchPromptConfig::new(30).with_position([200, 0]),
        [224, 224],
    );
    assert!(matches!(e, PromptError::PatchOutOfBounds { row: 200, .. }), "{e}");
    let e = err(RandomPatchPromptConfig::new(50), [224, 40]);
    assert!(matches!(e, PromptError::PatchOutOfBounds { .. }), "{e}");
    let e = err(
        RandomPatchPromptConfig::new(30).with_eval_location(EvalLocation::Fixed { position: [0, 195] }),
        [224, 224],
    );
    assert!(matches!(e, PromptError::PatchOutOfBounds { col: 195, .. }), "{e}");
    // The largest patch is the whole (square) image.
    assert!(FixedPatchPromptConfig::new(224).validate([224, 224]).is_ok());
}

#[test]
fn nan_infinite_and_negative_init() {
    for std in [f64::NAN, f64::INFINITY, -1.0] {
        let e = err(
            PaddingPromptConfig::new(3).with_init(PromptInit::Normal { std }),
            [32, 32],
        );
        assert!(matches!(e, PromptError::InvalidInitStd { .. }), "{e}");
    }
}

#[test]
fn negative_or_malformed_sizes_in_config_files() {
    for json in [
        r#"{"Padding": {"pad": -30}}"#,
        r#"{"Padding": {"pad": 30.5}}"#,
        r#"{"Padding": {"pad": "thirty"}}"#,
        r#"{"Padding": {}}"#,
        r#"{"Hexagon": {"pad": 3}}"#,
        "not json",
    ] {
        let e = PromptConfig::from_json(json).unwrap_err();
        assert!(matches!(e, PromptError::ConfigParse(_)), "{json}: {e}");
    }
    // Omitted fields take their defaults.
    let config = PromptConfig::from_json(r#"{"Padding": {"pad": 30}}"#).unwrap();
    let PromptConfig::Padding(padding) = &config else {
        panic!("{config:?}")
    };
    assert_eq!(
        (padding.pad, padding.channels, padding.init),
        (30, 3, PromptInit::RANDN)
    );
    assert_eq!(
        PromptConfig::from_json(&config.to_json()).unwrap().to_json(),
        config.to_json()
    );
}

#[test]
fn images_of_the_wrong_shape_are_refused() {
    let device = Device::flex();
    let prompt = PaddingPromptConfig::new(3).init([16, 16], &device).unwrap();
    for shape in [[2, 3, 16, 15], [2, 1, 16, 16], [2, 3, 32, 32]] {
        let e = prompt
            .apply(Tensor::<4>::zeros(shape, &device), Phase::Eval { batch: 0 })
            .unwrap_err();
        assert!(
            matches!(e, PromptError::InputShape { actual, .. } if actual == shape),
            "{e}"
        );
    }
    let frame = ShrinkFramePromptConfig::new(3).init([16, 16], &device).unwrap();
    let e = frame
        .apply(
            Tensor::<4>::zeros([2, 1, 16, 16], &device),
            Phase::Eval { batch: 0 },
        )
        .unwrap_err();
    assert!(matches!(e, PromptError::InputShape { .. }), "{e}");
    // Shrink-and-frame accepts any image size and resizes it.
    assert!(
        frame
            .apply(
                Tensor::<4>::zeros([2, 3, 40, 30], &device),
                Phase::Eval { batch: 0 }
            )
            .is_ok()
    );
}
