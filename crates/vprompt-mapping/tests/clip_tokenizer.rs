//! vprompt's CLIP tokenizer gives transformers' ids: on a corpus with punctuation, contractions,
//! accents, CJK and emoji, numbers, whitespace runs, the empty string and a text longer than the
//! context. The reference is `reference/clip_tokenizer.json`, written by
//! `python scripts/clip_tokenizer_reference.py crates/vprompt-mapping/tests/reference/clip_tokenizer.json`
//! (transformers' `CLIPTokenizer` with OpenAI's BPE).

use vprompt_mapping::{CONTEXT_LENGTH, Tokenizer, tokenize};

#[derive(serde::Deserialize)]
struct Reference {
    texts: Vec<String>,
    ids: Vec<Vec<i64>>,
}

#[test]
fn ids_equal_transformers_clip_tokenizer() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/clip_tokenizer.json"
    ))
    .unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    assert!(reference.texts.len() >= 10);
    let ids = tokenize(&Tokenizer::new(), &reference.texts);
    assert_eq!(ids.len(), reference.texts.len() * CONTEXT_LENGTH);
    for ((text, want), row) in reference
        .texts
        .iter()
        .zip(&reference.ids)
        .zip(ids.chunks(CONTEXT_LENGTH))
    {
        // transformers stops at the end-of-text token; vprompt pads the rest of the context with 0.
        assert_eq!(&row[..want.len()], &want[..], "{text:?}");
        assert!(row[want.len()..].iter().all(|&id| id == 0), "{text:?}: padding");
    }
    // The over-long text fills the context, with end-of-text last.
    assert!(reference.ids.iter().any(|r| r.len() == CONTEXT_LENGTH));
}
