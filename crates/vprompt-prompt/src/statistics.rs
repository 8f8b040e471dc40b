//! Value statistics of a prompt, for inspecting what was learned.

use std::fmt;

use crate::any::Prompt;
use crate::space::Phase;
use crate::visual_prompt::VisualPrompt;

/// Statistics of the values a prompt adds (its evaluation-time perturbation), over the non-zero
/// values: a frame's interior, which stays exactly zero, does not count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptStatistics {
    /// Non-zero values.
    pub nonzero: usize,
    /// Smallest value (0 when there are none).
    pub min: f64,
    /// Largest value (0 when there are none).
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation (population).
    pub std: f64,
    /// Euclidean norm.
    pub l2: f64,
}

impl Prompt {
    /// Statistics of the values the prompt adds at evaluation.
    pub fn statistics(&self) -> PromptStatistics {
        let values: Vec<f64> = self
            .perturbation(Phase::Eval { batch: 0 })
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32 prompts")
            .into_iter()
            .filter(|v| *v != 0.0)
            .map(f64::from)
            .collect();
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        PromptStatistics {
            nonzero: values.len(),
            min: if values.is_empty() { 0.0 } else { min },
            max: if values.is_empty() { 0.0 } else { max },
            mean,
            std: (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt(),
            l2: values.iter().map(|v| v * v).sum::<f64>().sqrt(),
        }
    }
}

impl fmt::Display for PromptStatistics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "min {:.4}  max {:.4}  mean {:.4}  std {:.4}  L2 {:.4}",
            self.min, self.max, self.mean, self.std, self.l2
        )
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::prelude::*;

    use crate::{FixedPatchPromptConfig, PromptInit};

    #[test]
    fn statistics_count_only_the_values_the_prompt_adds() {
        let device = Device::flex();
        let zeros: crate::Prompt = FixedPatchPromptConfig::new(2)
            .with_init(PromptInit::Zeros)
            .init([8, 8], &device)
            .unwrap()
            .into();
        let s = zeros.statistics();
        assert_eq!((s.nonzero, s.min, s.max, s.l2), (0, 0.0, 0.0, 0.0));

        // A 2 x 2 x 3 patch of N(0, 1) draws on an 8 x 8 image: 12 values, the 180 others zero.
        let patch: crate::Prompt = FixedPatchPromptConfig::new(2)
            .init([8, 8], &device)
            .unwrap()
            .into();
        let values: Vec<f64> = crate::VisualPrompt::perturbation(&patch, crate::Phase::Eval { batch: 0 })
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap()
            .into_iter()
            .filter(|v| *v != 0.0)
            .map(f64::from)
            .collect();
        assert_eq!(values.len(), 12);
        let s = patch.statistics();
        let mean = values.iter().sum::<f64>() / 12.0;
        assert_eq!(s.nonzero, 12);
        assert!((s.mean - mean).abs() < 1e-12);
        assert!((s.l2 - values.iter().map(|v| v * v).sum::<f64>().sqrt()).abs() < 1e-12);
        assert_eq!(s.max, values.iter().cloned().fold(f64::MIN, f64::max));
        assert!(s.std > 0.0 && s.min < 0.0 && s.max > 0.0);
    }
}
