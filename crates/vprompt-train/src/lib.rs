//! Training and evaluation of visual prompts on frozen backbones.
//!
//! This crate will hold `PromptedClassifier` (prompt + frozen backbone + output mapping), the
//! paper's training recipe and its follow-ups, evaluation with validation-based model selection,
//! the linear-probe baseline, crash-safe checkpoints with exact resume, and black-box
//! (zeroth-order) optimisers. See `DESIGN.md` section 2 and issue 6.
