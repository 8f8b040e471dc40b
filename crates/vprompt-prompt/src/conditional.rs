//! Input-conditional prompts: the paper's closing section leaves "input-conditional" prompts for
//! future work; BlackVIP's Coordinator and SMM's mask network are its follow-ups. Here a light
//! convolutional generator looks at each image and produces a per-image perturbation, placed on
//! the pixels of any fixed template (its frame, its patch) and added to that template's own
//! input-agnostic prompt:
//!
//! ```text
//! x' = framed(x) + v + m ⊙ G(framed(x))
//! ```
//!
//! `framed` is the template's own pipeline (shrink-and-frame resizes into its frame), `v` the
//! template's learned prompt, `m` its support (1 on the frame or patch, 0 elsewhere) and `G` the
//! generator. `G`'s last layer starts at zero, so a new conditional prompt is exactly its template
//! and training adds the input dependence.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{adaptive_avg_pool2d, conv2d, interpolate};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};
use rand::{RngExt, SeedableRng, rngs::StdRng};

use crate::any::{Prompt, PromptConfig};
use crate::error::{PromptError, Result};
use crate::geometry::place_patch;
use crate::space::{Phase, PromptSpace, add_in_space, check_positive};
use crate::visual_prompt::VisualPrompt;

const TEMPLATE: &str = "conditional";

/// Side of the generator's square kernels.
const KERNEL: usize = 3;

vprompt_core::config! {
    /// An input-conditional prompt: a fixed template's prompt plus, on the template's pixels, a
    /// per-image perturbation made by a small convolutional generator from the image itself.
    ///
    /// The generator average-pools the (framed, prompt-space) image by `downsample`, runs three
    /// 3x3 convolutions (`C -> hidden -> hidden -> C`, ReLU between them), and upsamples the result
    /// bilinearly back to the image size. For 3 channels it has `54 hidden + 9 hidden^2 + 2 hidden
    /// + 3` weights (3,203 for `hidden = 16`), learned beside the template's.
    pub struct ConditionalPromptConfig {
        /// The fixed template: where the prompt goes, and its input-agnostic part. Any template
        /// but another conditional prompt.
        pub template: Box<PromptConfig>,
    }
    defaults {
        /// Channels of the generator's two hidden layers.
        pub hidden: usize = 16,
        /// The generator sees the image average-pooled by this factor (224 -> 28 for 8) and its
        /// output is upsampled by it: its convolutions run on `1 / downsample^2` of the pixels.
        pub downsample: usize = 8,
        /// Seed of the generator's initial weights (the template keeps its own seed).
        pub seed: u64 = 0,
    }
}

impl ConditionalPromptConfig {
    /// Checks the config against the image size it will be used with.
    pub fn validate(&self, image_size: [usize; 2]) -> Result<()> {
        if matches!(*self.template, PromptConfig::Conditional(_)) {
            return Err(PromptError::NestedConditional);
        }
        self.template.validate(image_size)?;
        check_positive(TEMPLATE, "hidden", self.hidden)?;
        check_positive(TEMPLATE, "downsample", self.downsample)
    }

    /// Validates, then creates the prompt for `[height, width]` images on `device`.
    pub fn init(&self, image_size: [usize; 2], device: &Device) -> Result<ConditionalPrompt> {
        self.validate(image_size)?;
        let template = self.template.init(image_size, device)?;
        let channels = template.channels();
        let mut rng = StdRng::seed_from_u64(self.seed);
        let widths = [channels, self.hidden, self.hidden, channels];
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(k, pair)| {
                let zero = k == widths.len() - 2;
                GeneratorConv::new(pair[0], pair[1], zero, &mut rng, device)
            })
            .collect();
        Ok(ConditionalPrompt {
            template: vec![template],
            generator: PromptGenerator {
                layers,
                downsample: self.downsample,
            },
            config: self.clone(),
        })
    }
}

/// One 3x3 convolution of the generator, padded to keep the size.
#[derive(Module, Debug)]
pub(crate) struct GeneratorConv {
    /// `[out, in, 3, 3]`.
    pub(crate) weight: Param<Tensor<4>>,
    /// `[out]`.
    pub(crate) bias: Param<Tensor<1>>,
}

impl GeneratorConv {
    /// PyTorch's default initialisation, `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for weights and
    /// biases, drawn on the host from `rng` (the same values on every backend); all zeros for the
    /// last layer.
    fn new(inputs: usize, outputs: usize, zero: bool, rng: &mut StdRng, device: &Device) -> Self {
        let bound = 1.0 / ((inputs * KERNEL * KERNEL) as f64).sqrt();
        let mut draw = |count: usize| -> Vec<f32> {
            (0..count)
                .map(|_| {
                    if zero {
                        0.0
                    } else {
                        rng.random_range(-bound..bound) as f32
                    }
                })
                .collect()
        };
        let weight = draw(outputs * inputs * KERNEL * KERNEL);
        let bias = draw(outputs);
        Self {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(weight, [outputs, inputs, KERNEL, KERNEL]),
                device,
            )),
            bias: Param::from_tensor(Tensor::from_data(TensorData::new(bias, [outputs]), device)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pad = KERNEL / 2;
        conv2d(
            x,
            self.weight.val(),
            Some(self.bias.val()),
            ConvOptions::new([1, 1], [pad, pad], [1, 1], 1),
        )
    }

    fn num_params(&self) -> usize {
        self.weight.val().shape().num_elements() + self.bias.val().shape().num_elements()
    }
}

/// The generator `G`: pool, three convolutions, upsample.
#[derive(Module, Debug)]
pub(crate) struct PromptGenerator {
    pub(crate) layers: Vec<GeneratorConv>,
    #[module(skip)]
    downsample: usize,
}

impl PromptGenerator {
    /// # Shapes
    /// - images: `[batch, C, H, W]`
    /// - output: `[batch, C, H, W]`
    fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        let [_, _, height, width] = images.dims();
        let small = [height.div_ceil(self.downsample), width.div_ceil(self.downsample)];
        let mut x = adaptive_avg_pool2d(images, small);
        let last = self.layers.len() - 1;
        for (k, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if k < last {
                x = relu(x);
            }
        }
        let options = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([height, width]);
        interpolate(x, options)
    }

    fn num_params(&self) -> usize {
        self.layers.iter().map(GeneratorConv::num_params).sum()
    }
}

/// A fixed template's prompt plus a per-image one from a generator; see the module docs.
#[derive(Module, Debug)]
pub struct ConditionalPrompt {
    /// The template, as a one-element `Vec`: Burn's `Module` is implemented for `Vec` but not for
    /// `Box`, and the recursion through [`Prompt`] needs one of them.
    pub(crate) template: Vec<Prompt>,
    /// The generator.
    pub(crate) generator: PromptGenerator,
    #[module(skip)]
    config: ConditionalPromptConfig,
}

impl ConditionalPrompt {
    /// The config this prompt was made from.
    pub fn config(&self) -> &ConditionalPromptConfig {
        &self.config
    }

    /// The fixed template inside.
    pub fn template(&self) -> &Prompt {
        &self.template[0]
    }

    /// Number of the generator's learned values (its weights and biases); the template's are
    /// [`template().num_params()`](Prompt::num_params), and [`VisualPrompt::num_params`] is the sum.
    pub fn generator_params(&self) -> usize {
        self.generator.num_params()
    }

    /// The per-image part `m ⊙ G(framed)` of the perturbation.
    ///
    /// # Shapes
    /// - framed: `[batch, C, H, W]`, images as [`VisualPrompt::unprompted`] returns them
    /// - output: `[batch, C, H, W]`
    pub fn generated(&self, framed: Tensor<4>, phase: Phase) -> Tensor<4> {
        let support = self.template().support(phase);
        self.generator.forward(framed) * support
    }
}

impl VisualPrompt for ConditionalPrompt {
    fn image_size(&self) -> [usize; 2] {
        self.template().image_size()
    }

    fn input_size(&self) -> [usize; 2] {
        self.template().input_size()
    }

    fn channels(&self) -> usize {
        self.template().channels()
    }

    fn space(&self) -> PromptSpace {
        self.template().space()
    }

    fn num_params(&self) -> usize {
        self.template().num_params() + self.generator_params()
    }

    /// The input-agnostic part only: the template's prompt (what a PNG of the prompt shows).
    fn perturbation(&self, phase: Phase) -> Tensor<4> {
        self.template().perturbation(phase)
    }

    fn apply(&self, images: Tensor<4>, phase: Phase) -> Result<Tensor<4>> {
        let framed = self.template().unprompted(images)?;
        Ok(self.prompt_framed(framed, phase))
    }

    fn unprompted(&self, images: Tensor<4>) -> Result<Tensor<4>> {
        self.template().unprompted(images)
    }
}

impl ConditionalPrompt {
    /// [`Prompt::prompt_framed`] for this prompt.
    fn prompt_framed(&self, framed: Tensor<4>, phase: Phase) -> Tensor<4> {
        let delta = self.generated(framed.clone(), phase) + self.perturbation(phase);
        add_in_space(framed, delta, self.space())
    }
}

impl Prompt {
    /// Prompts images that [`unprompted`](VisualPrompt::unprompted) has already checked (and, for
    /// shrink-and-frame, framed): `apply(x, phase) == prompt_framed(unprompted(x), phase)`. For a
    /// fixed template this adds [`perturbation`](VisualPrompt::perturbation); an input-conditional
    /// prompt adds its per-image part too. Black-box training frames a batch once and prompts it
    /// with many candidate prompts through this.
    ///
    /// # Shapes
    /// - framed, output: `[batch, C, H, W]`
    pub fn prompt_framed(&self, framed: Tensor<4>, phase: Phase) -> Tensor<4> {
        match self {
            Prompt::Conditional(p) => p.prompt_framed(framed, phase),
            fixed => add_in_space(framed, fixed.perturbation(phase), fixed.space()),
        }
    }

    /// 1 on the pixels the template's prompt covers in `phase` (the frame, the patch at its
    /// location, every pixel), 0 elsewhere; a constant, off the autodiff tape.
    ///
    /// # Shapes
    /// - output: `[1, C, H, W]`
    pub(crate) fn support(&self, phase: Phase) -> Tensor<4> {
        let [height, width] = self.image_size();
        let channels = self.channels();
        let patch = |learned: &Param<Tensor<4>>, size: usize, position: [usize; 2]| {
            let ones = Tensor::<4>::ones([1, channels, size, size], &learned.val().device());
            place_patch(ones, position, [height, width])
        };
        match self {
            Prompt::Padding(p) => p.frame.mask.clone(),
            Prompt::ShrinkFrame(p) => p.frame.mask.clone(),
            Prompt::FullImage(p) => p.delta.val().ones_like(),
            Prompt::FixedPatch(p) => patch(&p.patch, p.config().size, p.config().position),
            Prompt::RandomPatch(p) => patch(&p.patch, p.config().size, p.location(phase)),
            Prompt::Conditional(p) => p.template().support(phase),
        }
    }
}
