//! Run: `cargo run -p own-onnx-backbone`
use burn::prelude::*;
use own_onnx_backbone::MyBackbone;
use vprompt::Backbone;

fn main() -> anyhow::Result<()> {
    let device = Device::flex();
    let backbone = MyBackbone::new(&device);
    let pixels = Tensor::<4>::full([2, 3, 32, 32], 0.5, &device);
    let logits = backbone.forward(pixels)?;
    println!("{}: logits {:?}", backbone.name(), logits.dims());
    Ok(())
}
