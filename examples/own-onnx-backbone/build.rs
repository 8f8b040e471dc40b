//! Generates the model's Rust code and weights from its ONNX file at build time (burn-onnx's
//! standard recipe). Here "your model" is vprompt's tiny ResNet test fixture; point `ONNX` at
//! your own export (dynamic batch axis, opset 17-18).

const ONNX: &str = "../../crates/vprompt-backbone/tests/fixtures/tiny_resnet.onnx";

fn main() {
    println!("cargo::rerun-if-changed={ONNX}");
    burn_onnx::ModelGen::new()
        .input(ONNX)
        .out_dir("model/")
        .run_from_script();
}
