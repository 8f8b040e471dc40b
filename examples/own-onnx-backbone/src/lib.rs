//! Wrapping an ONNX model vprompt has no preset for as a [`Backbone`], so that prompts, mappings and
//! training work with it unchanged.

use burn::module::Module;
use burn::prelude::*;
use vprompt::backbone::{BackboneError, check_image_input};
use vprompt::{Backbone, Normalization, OutputKind};

/// The code burn-onnx generated in build.rs.
#[allow(missing_docs, dead_code, clippy::all)]
mod model {
    include!(concat!(env!("OUT_DIR"), "/model/tiny_resnet.rs"));
}

/// Your model, frozen, with what vprompt needs to know about it.
#[derive(Module, Debug)]
pub struct MyBackbone {
    model: model::Model,
    #[module(skip)]
    normalization: Normalization,
}

impl MyBackbone {
    /// Loads the weights burn-onnx wrote next to the generated code. Load on the plain device
    /// (`Device::flex()`) for training: only the prompt needs the autodiff device.
    pub fn new(device: &Device) -> Self {
        let weights = concat!(env!("OUT_DIR"), "/model/tiny_resnet.bpk");
        Self {
            model: model::Model::from_file(weights, device),
            // The statistics your model was trained with.
            normalization: Normalization::HALF,
        }
        .freeze()
    }
}

impl Backbone for MyBackbone {
    fn name(&self) -> &str {
        "my-tiny-resnet"
    }

    fn input_size(&self) -> [usize; 2] {
        [32, 32]
    }

    fn normalization(&self) -> &Normalization {
        &self.normalization
    }

    fn output_kind(&self) -> OutputKind {
        OutputKind::Logits
    }

    fn output_dim(&self) -> usize {
        10
    }

    fn feature_dim(&self) -> usize {
        16
    }

    fn forward_features(&self, images: Tensor<4>) -> Result<(Tensor<2>, Tensor<2>), BackboneError> {
        // Check before calling generated code, which would panic on a wrong shape.
        check_image_input(self.name(), &images, self.input_size())?;
        Ok(self.model.forward(images))
    }
}
