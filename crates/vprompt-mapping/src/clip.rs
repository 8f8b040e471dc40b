//! The CLIP text-prompt head (paper sections 3.5, 3.6, 4.2): every class name is put into text
//! templates, tokenised with CLIP's BPE, encoded **once** by the frozen text tower, normalised and
//! averaged over templates; logits are `100 * cos(image embedding, class embedding)`. Unprompted,
//! this is the paper's text-prompt (TP, zero-shot) baseline.

use burn::prelude::*;
use instant_clip_tokenizer::{Token, Tokenizer};

use crate::error::{MappingError, Result};
use crate::mapping::{Mapping, MappingKind, l2_normalize};

/// CLIP's context length.
pub const CONTEXT_LENGTH: usize = 77;

/// CLIP's fixed logit scale, `exp(ln 100)`.
pub const LOGIT_SCALE: f32 = 100.0;

/// The paper's template (capital T, no trailing period, as in the released code).
pub const PAPER_TEMPLATE: &str = "This is a photo of a {}";

/// The paper's CLEVR/count template, with class names "three" .. "ten".
pub const CLEVR_TEMPLATE: &str = "This is a photo of {} objects";

/// The paper's Camelyon17 template, with class names "containing" and "not containing".
pub const CAMELYON17_TEMPLATE: &str = "a tissue region {} tumor";

/// OpenAI CLIP's 80 ImageNet prompt templates (the zero-shot ensemble), averaged per class.
pub const IMAGENET_TEMPLATES: [&str; 80] = [
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
];

/// The released code's class-name refinement: lower case, `_` and `-` to spaces.
pub fn refine_class_name(name: &str) -> String {
    name.to_lowercase().replace(['_', '-'], " ")
}

/// CLIP BPE tokenisation to `[texts, 77]` ids: start-of-text, the tokens, end-of-text, zero-padded.
/// Texts longer than the context are cut, keeping the end-of-text token (the text tower reads the
/// feature at its position; OpenAI's tokenizer raises instead).
pub fn tokenize(tokenizer: &Tokenizer, texts: &[String]) -> Vec<i64> {
    let mut ids = Vec::with_capacity(texts.len() * CONTEXT_LENGTH);
    let mut tokens: Vec<Token> = Vec::new();
    for text in texts {
        tokens.clear();
        tokenizer.encode(text, &mut tokens);
        tokens.truncate(CONTEXT_LENGTH - 2);
        let row = std::iter::once(tokenizer.start_of_text())
            .chain(tokens.iter().copied())
            .chain(std::iter::once(tokenizer.end_of_text()))
            .map(|t| i64::from(t.to_u16()));
        let start = ids.len();
        ids.extend(row);
        ids.resize(start + CONTEXT_LENGTH, 0);
    }
    ids
}

/// Puts a class name into a template (`{}` is replaced).
pub fn fill(template: &str, class: &str) -> String {
    template.replace("{}", class)
}

/// Builds the CLIP text head for `classes` (refined with [`refine_class_name`]) and `templates`:
/// tokenises every (template, class) text, encodes them with `encode` in batches of at most
/// `batch` texts, L2-normalises each embedding, averages over templates and normalises again.
///
/// Logits are scaled by [`LOGIT_SCALE`] (100, OpenAI CLIP's trained value); for weights with
/// another learned scale, follow with [`Mapping::with_scale`] (`TextEncoder::logit_scale`).
///
/// `encode` is the frozen text tower (for example `vprompt_backbone::TextEncoder::forward`):
/// token ids `[n, 77]` to embeddings `[n, D]`. It runs once per text here, never per training batch.
pub fn clip_head<E: std::fmt::Display>(
    classes: &[String],
    templates: &[String],
    batch: usize,
    device: &Device,
    mut encode: impl FnMut(Tensor<2, Int>) -> Result<Tensor<2>, E>,
) -> Result<Mapping> {
    if classes.is_empty() || templates.is_empty() {
        return Err(MappingError::InvalidConfig(
            "a CLIP head needs at least one class and one template".into(),
        ));
    }
    if let Some(t) = templates.iter().find(|t| !t.contains("{}")) {
        return Err(MappingError::InvalidConfig(format!(
            "template `{t}` has no `{{}}` for the class name"
        )));
    }
    let classes: Vec<String> = classes.iter().map(|c| refine_class_name(c)).collect();
    let tokenizer = Tokenizer::new();
    // Texts ordered class-major: class c's templates are rows c*T .. (c+1)*T.
    let texts: Vec<String> = classes
        .iter()
        .flat_map(|class| templates.iter().map(move |t| fill(t, class)))
        .collect();
    let ids = tokenize(&tokenizer, &texts);
    let mut embeddings: Vec<Tensor<2>> = Vec::new();
    for (chunk, rows) in ids
        .chunks(batch.max(1) * CONTEXT_LENGTH)
        .zip(texts.chunks(batch.max(1)))
    {
        let tokens = Tensor::<2, Int>::from_data(
            TensorData::new(chunk.to_vec(), [rows.len(), CONTEXT_LENGTH]),
            device,
        );
        let embedding = encode(tokens).map_err(|e| MappingError::TextEncoder(e.to_string()))?;
        embeddings.push(l2_normalize(embedding));
    }
    let all = Tensor::cat(embeddings, 0);
    let [n, dim] = all.dims();
    if n != texts.len() {
        return Err(MappingError::TextEncoder(format!(
            "{} texts gave {n} embeddings",
            texts.len()
        )));
    }
    let per_class = all
        .reshape([classes.len(), templates.len(), dim])
        .mean_dim(1)
        .reshape([classes.len(), dim]);
    let class_embeddings = l2_normalize(per_class);
    let matrix = class_embeddings
        .transpose()
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("float data");
    let kind = MappingKind::ClipText {
        classes: classes.clone(),
        templates: templates.to_vec(),
    };
    Ok(Mapping::from_matrix(
        matrix,
        [dim, classes.len()],
        true,
        LOGIT_SCALE,
        kind,
        device,
    ))
}
