//! Prompts under the paper's optimiser (SGD, lr 40, momentum 0.9, dampening 0) in front of a
//! small frozen conv net: only the prompt learns, and nothing outside it ever moves.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::relu;
use vprompt_prompt::*;
use vprompt_testkit::{device_tests, to_vec};

/// conv -> batch norm -> relu -> global average -> linear: enough structure to have weights,
/// running statistics and a non-trivial input gradient.
#[derive(Module, Debug)]
struct TinyNet {
    conv: Conv2d,
    norm: BatchNorm,
    head: Linear,
}

impl TinyNet {
    fn new(device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([3, 6], [3, 3]).init(device),
            norm: BatchNormConfig::new(6).init(device),
            head: LinearConfig::new(6, 4).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(self.norm.forward(self.conv.forward(x)));
        let [b, c, _, _] = x.dims();
        self.head.forward(x.mean_dim(3).mean_dim(2).reshape([b, c]))
    }
}

/// Replaces every weight by a fixed pattern computed on the host: the same net in every call and
/// every thread (the device RNG is shared by the tests running in parallel).
fn deterministic(net: TinyNet) -> TinyNet {
    struct Pattern(usize);
    impl burn::module::ModuleMapper for Pattern {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<D>>,
        ) -> burn::module::Param<Tensor<D>> {
            let (shape, device) = (param.val().shape(), param.val().device());
            let n = shape.num_elements();
            // Vectors (biases, BatchNorm scales and running statistics) stay positive: a negative
            // running variance would give NaN.
            let offset = if D == 1 { 0.5 } else { 0.0 };
            let values: Vec<f32> = (0..n)
                .map(|k| offset + 0.3 * ((k + 7 * self.0) as f32 * 0.618).sin())
                .collect();
            self.0 += 1;
            param.map(|_| Tensor::from_data(TensorData::new(values, shape), &device))
        }
    }
    net.map(&mut Pattern(0))
}

#[derive(Module, Debug)]
struct Prompted {
    prompt: Prompt,
    net: TinyNet,
}

impl Prompted {
    fn loss(&self, images: Tensor<4>, labels: Tensor<1, Int>, step: u64) -> Tensor<1> {
        let prompted = self.prompt.apply(images, Phase::Train { step }).unwrap();
        let logits = self.net.forward(prompted);
        CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits, labels)
    }
}

fn paper_sgd() -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0)))
        .init()
}

const SIZE: [usize; 2] = [16, 20];

/// Which pixels of a `[1, 3, 16, 20]` perturbation belong to the template.
fn inside(config: &PromptConfig, c: usize, i: usize, j: usize) -> bool {
    let _ = c;
    match config {
        PromptConfig::Padding(p) => i < p.pad || j < p.pad || i >= SIZE[0] - p.pad || j >= SIZE[1] - p.pad,
        PromptConfig::ShrinkFrame(p) => {
            i < p.pad || j < p.pad || i >= SIZE[0] - p.pad || j >= SIZE[1] - p.pad
        }
        PromptConfig::FixedPatch(p) => {
            let [r, col] = p.position;
            (r..r + p.size).contains(&i) && (col..col + p.size).contains(&j)
        }
        _ => true,
    }
}

/// A fixed batch computed on the host, so that runs are comparable across calls and backends.
fn batch(device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let n = 4 * 3 * SIZE[0] * SIZE[1];
    let values: Vec<f32> = (0..n).map(|k| 0.5 + 0.5 * ((k as f32) * 0.37).sin()).collect();
    let images = Tensor::from_data(TensorData::new(values, [4, 3, SIZE[0], SIZE[1]]), device);
    (images, Tensor::<1, Int>::from_ints([0, 1, 2, 3], device))
}

fn run_steps(config: PromptConfig, device: &Device) -> (Prompted, Vec<f32>) {
    let ad = device.clone().autodiff();
    let net = deterministic(TinyNet::new(&ad)).freeze();
    let prompt = config.init(SIZE, &ad).unwrap();
    let before = to_vec(prompt.perturbation(Phase::Eval { batch: 0 }));
    let mut model = Prompted { prompt, net };
    let mut optim = paper_sgd();
    let (images, labels) = batch(&ad);
    for step in 0..5 {
        let loss = model.loss(images.clone(), labels.clone(), step);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        assert_eq!(grads.len(), 1, "only the prompt may receive a gradient");
        model = optim.step(40.0, model, grads);
    }
    (model, before)
}

fn outside_the_prompt_stays_exactly_zero(device: &Device) {
    let configs: Vec<PromptConfig> = vec![
        PaddingPromptConfig::new(3).into(),
        ShrinkFramePromptConfig::new(3)
            .with_init(PromptInit::RANDN)
            .into(),
        FixedPatchPromptConfig::new(5).with_position([6, 9]).into(),
    ];
    for config in configs {
        let (model, before) = run_steps(config.clone(), device);
        let after = to_vec(model.prompt.perturbation(Phase::Eval { batch: 0 }));
        let mut learned = 0;
        for c in 0..3 {
            for i in 0..SIZE[0] {
                for j in 0..SIZE[1] {
                    let k = (c * SIZE[0] + i) * SIZE[1] + j;
                    if inside(&config, c, i, j) {
                        learned += usize::from(after[k] != before[k]);
                    } else {
                        // Numerically zero (the mask product can give -0.0, which adds nothing).
                        assert_eq!(after[k], 0.0, "{config:?} moved pixel {c},{i},{j}");
                    }
                }
            }
        }
        assert!(learned > 0, "{config:?}: the prompt did not learn");
        // And the prompted image equals the input there, bit for bit.
        if let PromptConfig::Padding(p) = &config {
            let x = Tensor::<4>::random([2, 3, SIZE[0], SIZE[1]], Distribution::Default, device);
            let y = model
                .prompt
                .valid()
                .apply(x.clone(), Phase::Eval { batch: 0 })
                .unwrap();
            let (x, y) = (to_vec(x), to_vec(y));
            for k in 0..x.len() {
                let (i, j) = ((k / SIZE[1]) % SIZE[0], k % SIZE[1]);
                let interior = i >= p.pad && j >= p.pad && i < SIZE[0] - p.pad && j < SIZE[1] - p.pad;
                if interior {
                    assert_eq!(x[k].to_bits(), y[k].to_bits());
                }
            }
        }
    }
}

/// The frozen net's weights and BatchNorm statistics do not move; the prompt stays trainable.
fn only_the_prompt_learns(device: &Device) {
    let ad = device.clone().autodiff();
    let net = TinyNet::new(&ad).freeze();
    let weights_before = to_vec(net.conv.weight.val());
    let mean_before = to_vec(net.norm.running_mean.value());
    let (model, _) = {
        let config: PromptConfig = PaddingPromptConfig::new(3).into();
        let prompt = config.init(SIZE, &ad).unwrap();
        let mut model = Prompted { prompt, net };
        let mut optim = paper_sgd();
        let (images, labels) = batch(&ad);
        for step in 0..3 {
            let grads = GradientsParams::from_grads(
                model.loss(images.clone(), labels.clone(), step).backward(),
                &model,
            );
            model = optim.step(40.0, model, grads);
        }
        (model, ())
    };
    assert_eq!(to_vec(model.net.conv.weight.val()), weights_before);
    assert_eq!(to_vec(model.net.norm.running_mean.value()), mean_before);
    // The prompt's parameter still requires a gradient after the optimiser step.
    let mut trainable = 0;
    struct Count<'a>(&'a mut usize);
    impl burn::module::ModuleVisitor for Count<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            *self.0 += usize::from(param.val().is_require_grad());
        }
    }
    model.visit(&mut Count(&mut trainable));
    assert_eq!(trainable, 1);
}

/// The same config, seed and data give the same prompt after training; another seed does not.
fn training_is_reproducible(device: &Device) {
    let config = |seed| PromptConfig::from(RandomPatchPromptConfig::new(4).with_seed(seed));
    let phase = Phase::Eval { batch: 0 };
    let (a, _) = run_steps(config(3), device);
    let (b, _) = run_steps(config(3), device);
    let (c, _) = run_steps(config(4), device);
    let (a, b, c) = (
        a.prompt.perturbation(phase),
        b.prompt.perturbation(phase),
        c.prompt.perturbation(phase),
    );
    assert_eq!(to_vec(a.clone()), to_vec(b));
    assert_ne!(to_vec(a), to_vec(c));
}

device_tests!(
    outside_the_prompt_stays_exactly_zero,
    only_the_prompt_learns,
    training_is_reproducible
);
