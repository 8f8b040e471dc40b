//! Datasets and the input pipeline for visual prompting.
//!
//! This crate will hold the readers (IDX for MNIST and Fashion-MNIST, CIFAR binary batches, image
//! folders, CSV lists), seeded stratified validation splits and few-shot sampling, preprocessing to
//! a backbone's input size done once and cached as `u8`, and batching with seeded shuffling and
//! background prefetch. See `DESIGN.md` section 2 and issue 4.
