//! Mapping a frozen model's outputs to the classes of a downstream task.
//!
//! This crate will hold the `OutputMapping` trait and its implementations: the paper's first-N
//! mapping, random and manual mappings, the frequency-based (FLM), iterative (ILM) and Bayesian
//! (BLM, BLM+) mappings, and the CLIP text-prompt head (templates, tokenisation, text features
//! computed once). See `DESIGN.md` section 2 and issue 5.
