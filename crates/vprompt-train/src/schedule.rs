//! Learning rates as a pure function of the global step, so a resumed run continues the schedule
//! exactly (no scheduler state to save). Burn's cosine scheduler refuses rates above 1; the paper's
//! is 40.

use std::f64::consts::PI;

use crate::config::ScheduleConfig;

/// The learning rate of global step `step` (counted from 0) of a run of `total_steps` steps,
/// `steps_per_epoch` per epoch.
pub fn learning_rate(
    schedule: &ScheduleConfig,
    base: f64,
    step: u64,
    steps_per_epoch: u64,
    total_steps: u64,
) -> f64 {
    match schedule {
        ScheduleConfig::Constant => base,
        ScheduleConfig::WarmupCosine { warmup } => {
            if step < *warmup {
                base * (step + 1) as f64 / *warmup as f64
            } else {
                // Past the end (T <= W: the released code never leaves warmup) the rate stays at base.
                let span = total_steps.saturating_sub(*warmup);
                if span == 0 {
                    return base;
                }
                let e = (step - warmup) as f64;
                0.5 * (1.0 + (PI * e / span as f64).cos()) * base
            }
        }
        ScheduleConfig::CosinePerStep => 0.5 * (1.0 + (PI * step as f64 / total_steps as f64).cos()) * base,
        ScheduleConfig::CosinePerEpoch => {
            let epochs = (total_steps / steps_per_epoch.max(1)).max(1);
            let epoch = step / steps_per_epoch.max(1);
            0.5 * (1.0 + (PI * epoch as f64 / epochs as f64).cos()) * base
        }
        ScheduleConfig::MultiStep { milestones, gamma } => {
            let epochs = (total_steps / steps_per_epoch.max(1)).max(1) as f64;
            let epoch = (step / steps_per_epoch.max(1)) as f64;
            let passed = milestones
                .iter()
                .filter(|m| epoch >= (*m * epochs).floor())
                .count();
            base * gamma.powi(passed as i32)
        }
    }
}

impl ScheduleConfig {
    /// Whether a finished run can be continued for more epochs as if it had been that long from
    /// the start: only a constant rate does not depend on the run's length (warmup-cosine, the
    /// cosines and the multi-step milestones are laid over it).
    pub fn extends_exactly(&self) -> bool {
        matches!(self, ScheduleConfig::Constant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_cosine_matches_the_released_code() {
        // base 40, warmup 3, 8 steps: the values printed by utils.py's cosine_lr.
        let s = ScheduleConfig::WarmupCosine { warmup: 3 };
        let lrs: Vec<f64> = (0..8).map(|k| learning_rate(&s, 40.0, k, 8, 8)).collect();
        let expected = [
            13.333333, 26.666667, 40.0, 40.0, 36.180340, 26.180340, 13.819660, 3.819660,
        ];
        for (a, b) in lrs.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{lrs:?}");
        }
    }

    #[test]
    fn multistep_and_per_epoch_cosine() {
        let s = ScheduleConfig::MultiStep {
            milestones: vec![0.5, 0.72],
            gamma: 0.1,
        };
        // 100 epochs of 10 steps: x1 before epoch 50, x0.1 from 50, x0.01 from 72.
        assert_eq!(learning_rate(&s, 1.0, 499, 10, 1000), 1.0);
        assert!((learning_rate(&s, 1.0, 500, 10, 1000) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&s, 1.0, 720, 10, 1000) - 0.01).abs() < 1e-12);
        let c = ScheduleConfig::CosinePerEpoch;
        assert_eq!(learning_rate(&c, 70.0, 0, 10, 1000), 70.0);
        assert_eq!(
            learning_rate(&c, 70.0, 9, 10, 1000),
            70.0,
            "constant within an epoch"
        );
        assert!((learning_rate(&c, 70.0, 500, 10, 1000) - 35.0).abs() < 1e-9);
    }
}
