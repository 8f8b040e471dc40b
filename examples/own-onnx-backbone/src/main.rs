//! Run: `cargo run -p own-onnx-backbone [-- --device NAME]`
use burn::prelude::*;
use own_onnx_backbone::MyBackbone;
use vprompt::Backbone;

fn main() -> anyhow::Result<()> {
    let device = vprompt::device_from_args(std::env::args().skip(1))?.device;
    let backbone = MyBackbone::new(&device);
    let pixels = Tensor::<4>::full([2, 3, 32, 32], 0.5, &device);
    let logits = backbone.forward(pixels)?;
    println!("{}: logits {:?}", backbone.name(), logits.dims());
    Ok(())
}
