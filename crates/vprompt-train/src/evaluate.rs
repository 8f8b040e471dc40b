use std::fmt;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use vprompt_backbone::Backbone;
use vprompt_core::{Quiet, Task};
use vprompt_data::BatchLoader;
use vprompt_prompt::Phase;

use crate::classifier::PromptedClassifier;
use crate::error::{Result, TrainError};

/// Accuracy of a classifier on a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Images evaluated.
    pub count: usize,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction with the true class ranked first.
    pub top1: f64,
    /// Fraction with the true class among the five highest logits (all classes when there are
    /// fewer than five).
    pub top5: f64,
    /// Top-1 accuracy of each true class (NaN for a class with no images).
    pub per_class: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

/// Accumulates an [`Evaluation`] from logits, batch by batch.
#[derive(Debug, Clone)]
pub struct Tally {
    classes: usize,
    count: usize,
    loss: f64,
    top5: usize,
    confusion: Vec<Vec<usize>>,
}

impl Tally {
    /// An empty tally for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            count: 0,
            loss: 0.0,
            top5: 0,
            confusion: vec![vec![0; classes]; classes],
        }
    }

    /// Adds a batch: logits `[batch * classes]` row-major and labels.
    pub fn add(&mut self, logits: &[f32], labels: &[usize]) {
        for (row, &label) in logits.chunks(self.classes).zip(labels) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let log_sum = row.iter().map(|&v| ((v - max) as f64).exp()).sum::<f64>().ln() + max as f64;
            self.loss += log_sum - row[label] as f64;
            let predicted = (0..self.classes).fold(0, |best, k| if row[k] > row[best] { k } else { best });
            // Rank of the true class: how many logits beat it (ties count against it).
            let above = row
                .iter()
                .enumerate()
                .filter(|&(k, &v)| k != label && v >= row[label])
                .count();
            self.top5 += usize::from(above < 5);
            self.confusion[label][predicted] += 1;
            self.count += 1;
        }
    }

    /// The evaluation so far.
    pub fn finish(&self) -> Evaluation {
        let correct: usize = (0..self.classes).map(|k| self.confusion[k][k]).sum();
        let n = self.count.max(1) as f64;
        Evaluation {
            count: self.count,
            loss: self.loss / n,
            top1: correct as f64 / n,
            top5: self.top5 as f64 / n,
            per_class: (0..self.classes)
                .map(|k| {
                    let total: usize = self.confusion[k].iter().sum();
                    if total == 0 {
                        f64::NAN
                    } else {
                        self.confusion[k][k] as f64 / total as f64
                    }
                })
                .collect(),
            confusion: self.confusion.clone(),
        }
    }
}

/// Evaluates a classifier on every image of `loader` (in its order; shuffling does not change the
/// result), prompted (`Phase::Eval { batch }`) or not.
pub fn evaluate<B: Backbone>(
    classifier: &PromptedClassifier<B>,
    loader: &BatchLoader,
    device: &Device,
    prompted: bool,
) -> Result<Evaluation> {
    evaluate_with(classifier, loader, device, prompted, &mut Quiet)
}

/// [`evaluate`], advancing `task` by each batch's images.
pub fn evaluate_with<B: Backbone>(
    classifier: &PromptedClassifier<B>,
    loader: &BatchLoader,
    device: &Device,
    prompted: bool,
    task: &mut dyn Task,
) -> Result<Evaluation> {
    // Labels index the model's classes: another class count would score against wrong classes
    // (or past the end of the tally).
    let classes = &loader.data().classes;
    if classes.len() != classifier.num_classes() {
        return Err(TrainError::Mismatch(format!(
            "{} has {} classes, the model {}",
            loader.data().source,
            classes.len(),
            classifier.num_classes()
        )));
    }
    let mut tally = Tally::new(classifier.num_classes());
    for (k, batch) in loader.epoch(0, 0, device).enumerate() {
        let logits = if prompted {
            classifier.forward(batch.images, Phase::Eval { batch: k as u64 })?
        } else {
            classifier.forward_unprompted(batch.images)?
        };
        let logits = logits.into_data().try_into_vec_as::<f32>().expect("float logits");
        let labels: Vec<usize> = batch.indices.iter().map(|&i| loader.data().labels[i]).collect();
        tally.add(&logits, &labels);
        task.advance(labels.len() as u64, &String::new);
    }
    Ok(tally.finish())
}

/// Prompted and unprompted accuracy on the same data and mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Class names.
    pub classes: Vec<String>,
    /// With the learned prompt.
    pub prompted: Evaluation,
    /// Without it (same mapping): the baseline.
    pub unprompted: Evaluation,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, u) = (&self.prompted, &self.unprompted);
        writeln!(f, "{} images", p.count)?;
        writeln!(f, "              prompted  unprompted")?;
        writeln!(
            f,
            "top-1         {:>7.2}%  {:>9.2}%",
            100.0 * p.top1,
            100.0 * u.top1
        )?;
        writeln!(
            f,
            "top-5         {:>7.2}%  {:>9.2}%",
            100.0 * p.top5,
            100.0 * u.top5
        )?;
        writeln!(f, "loss          {:>8.4}  {:>10.4}", p.loss, u.loss)?;
        writeln!(f, "per class (top-1, prompted / unprompted):")?;
        for (k, name) in self.classes.iter().enumerate() {
            writeln!(
                f,
                "  {name:<20} {:>6.1}%  {:>6.1}%",
                100.0 * p.per_class[k],
                100.0 * u.per_class[k]
            )?;
        }
        writeln!(f, "confusion (rows: true class, columns: predicted), prompted:")?;
        for row in &p.confusion {
            let cells: Vec<String> = row.iter().map(|c| format!("{c:>5}")).collect();
            writeln!(f, "  {}", cells.join(""))?;
        }
        Ok(())
    }
}
