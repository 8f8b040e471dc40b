//! Zeroth-order optimisers: gradient estimates from loss values only, for prompts on models that
//! can only be queried (`../shared/research/reference-algorithm.md` sections 3.5 and 3.6).
//!
//! Both estimators work on the prompt's learned values `w` (flattened, `d` of them used) and ask
//! for the losses of a set of candidate points at once, so that one batched forward pass evaluates
//! every perturbation of a batch.

use rand::{RngExt, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Result, TrainError};

/// A zeroth-order optimiser and its hyper-parameters. The defaults are the reference code's
/// (`changdaeoh/BlackVIP`, `train.py`); both are stated for prompts added to normalised images,
/// so rescale step sizes for pixel-space prompts (the pixel range is about 4x smaller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ZerothOrderConfig {
    /// Random gradient-free estimation (BAR, Tsai et al. 2020):
    /// `g = sum_j (d/q) u_j (L(w + beta u_j) - L(w)) / beta` with `u_j` Gaussian directions
    /// normalised to the unit sphere, `q + 1` forward passes per image and step; then
    /// `w <- w - lr_k g` with polynomial decay over the first 90 % of the steps:
    /// `lr_k = (lr - lr_min) (1 - min(k, 0.9K) / (0.9K))^0.9 + lr_min`.
    Rgf {
        /// Number of random directions `q` (reference: 5).
        directions: usize,
        /// Smoothing `beta` (reference: 0.01).
        smoothing: f64,
        /// Initial step size (reference: 0.01; BlackVIP's CLIP configs: 10).
        learning_rate: f64,
        /// Final step size (reference: 1e-4; configs: 0.1).
        learning_rate_min: f64,
    },
    /// Two-sided SPSA averaged over `q` draws, with gradient-correction momentum (BlackVIP, Oh et
    /// al. 2023). With step `k` counted from 1: `a_k = a / (k + o)^alpha`, `c_k = c / k^gamma`;
    /// `Delta` has coordinates `sign * U[0.5, 1]`;
    /// `g_k = (1/q) sum_j (L(w + c_k Delta_j) - L(w - c_k Delta_j)) / (2 c_k Delta_j)`;
    /// `m_k = beta m_{k-1} + g_k`, `w <- w - a_k (g_k + beta m_k)`. `2q` forward passes per image
    /// and step. `momentum = 0` is plain SPSA.
    SpsaGc {
        /// Number of draws `q` averaged (reference `SP_AVG`: 5).
        draws: usize,
        /// `a` (reference: 40).
        a: f64,
        /// `c` (reference: 0.001).
        c: f64,
        /// `o` (reference: 0).
        o: f64,
        /// `alpha` (reference: 0.6).
        alpha: f64,
        /// `gamma` (reference: 0.1).
        gamma: f64,
        /// Gradient-correction momentum `beta` (reference `MOMS`: 0.9; 0 for plain SPSA).
        momentum: f64,
    },
}

impl ZerothOrderConfig {
    /// RGF with the reference defaults: q = 5, beta = 0.01, lr 0.01 decaying to 1e-4.
    pub fn rgf() -> Self {
        ZerothOrderConfig::Rgf {
            directions: 5,
            smoothing: 0.01,
            learning_rate: 0.01,
            learning_rate_min: 1e-4,
        }
    }

    /// SPSA-GC with the reference defaults: q = 5, `[o, c, a, alpha, gamma] = [0, 0.001, 40, 0.6,
    /// 0.1]`, momentum 0.9.
    pub fn spsa_gc() -> Self {
        ZerothOrderConfig::SpsaGc {
            draws: 5,
            a: 40.0,
            c: 0.001,
            o: 0.0,
            alpha: 0.6,
            gamma: 0.1,
            momentum: 0.9,
        }
    }

    /// Its name in logs: `rgf` or `spsa-gc`.
    pub fn name(&self) -> &'static str {
        match self {
            ZerothOrderConfig::Rgf { .. } => "rgf",
            ZerothOrderConfig::SpsaGc { .. } => "spsa-gc",
        }
    }

    /// Whether a finished run can be continued for more epochs as if it had been that long from
    /// the start: SPSA-GC's step size depends on the step alone; RGF's decays over the run's
    /// length, so more epochs would change the steps already taken.
    pub fn extends_exactly(&self) -> bool {
        matches!(self, ZerothOrderConfig::SpsaGc { .. })
    }

    /// Candidate points per step: `q + 1` (RGF) or `2q` (SPSA). Each costs one query per image of
    /// the batch.
    pub fn points_per_step(&self) -> usize {
        match *self {
            ZerothOrderConfig::Rgf { directions, .. } => directions + 1,
            ZerothOrderConfig::SpsaGc { draws, .. } => 2 * draws,
        }
    }

    /// Checks the settings; an error names the field (`Rgf.smoothing`).
    pub fn validate(&self) -> Result<()> {
        match *self {
            ZerothOrderConfig::Rgf {
                directions,
                smoothing,
                learning_rate,
                learning_rate_min,
            } => {
                ConfigError::at_least_one("Rgf.directions", directions as u64)?;
                ConfigError::positive("Rgf.smoothing", smoothing)?;
                ConfigError::positive("Rgf.learning_rate", learning_rate)?;
                if !(learning_rate_min.is_finite() && (0.0..=learning_rate).contains(&learning_rate_min)) {
                    return Err(ConfigError::new(
                        "Rgf.learning_rate_min",
                        format!("must be in [0, learning_rate], got {learning_rate_min}"),
                    )
                    .into());
                }
            }
            ZerothOrderConfig::SpsaGc {
                draws,
                a,
                c,
                o,
                alpha,
                gamma,
                momentum,
            } => {
                ConfigError::at_least_one("SpsaGc.draws", draws as u64)?;
                ConfigError::positive("SpsaGc.a", a)?;
                ConfigError::positive("SpsaGc.c", c)?;
                ConfigError::non_negative("SpsaGc.o", o)?;
                ConfigError::non_negative("SpsaGc.alpha", alpha)?;
                ConfigError::non_negative("SpsaGc.gamma", gamma)?;
                if !(0.0..1.0).contains(&momentum) {
                    return Err(ConfigError::new(
                        "SpsaGc.momentum",
                        format!("must be in [0, 1), got {momentum}"),
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// The step size of step `step` (counted from 0) of a run of `total_steps`.
    pub fn step_size(&self, step: u64, total_steps: u64) -> f64 {
        match *self {
            ZerothOrderConfig::Rgf {
                learning_rate,
                learning_rate_min,
                ..
            } => {
                let decay = (0.9 * total_steps as f64).max(1.0);
                let progress = (step as f64).min(decay) / decay;
                (learning_rate - learning_rate_min) * (1.0 - progress).powf(0.9) + learning_rate_min
            }
            ZerothOrderConfig::SpsaGc { a, o, alpha, .. } => a / (step as f64 + 1.0 + o).powf(alpha),
        }
    }

    /// The candidate points of one step around `w`: `[w, w + beta u_1, ..., w + beta u_q]` (RGF) or
    /// `[w + c_k Delta_1, w - c_k Delta_1, ...]` (SPSA), and the perturbations they were built
    /// from. Only coordinates with `mask` set are perturbed.
    fn candidates(
        &self,
        w: &[f32],
        mask: &[bool],
        step: u64,
        rng: &mut StdRng,
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let shift = |w: &[f32], dir: &[f32], scale: f32| -> Vec<f32> {
            w.iter().zip(dir).map(|(&a, &b)| a + scale * b).collect()
        };
        match *self {
            ZerothOrderConfig::Rgf {
                directions,
                smoothing,
                ..
            } => {
                let dirs: Vec<Vec<f32>> = (0..directions)
                    .map(|_| {
                        let mut u: Vec<f32> = mask
                            .iter()
                            .map(|&m| {
                                let z: f64 = StandardNormal.sample(rng);
                                if m { z as f32 } else { 0.0 }
                            })
                            .collect();
                        let norm = u
                            .iter()
                            .map(|&v| (v as f64).powi(2))
                            .sum::<f64>()
                            .sqrt()
                            .max(1e-30);
                        u.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
                        u
                    })
                    .collect();
                let mut points = vec![w.to_vec()];
                points.extend(dirs.iter().map(|u| shift(w, u, smoothing as f32)));
                (points, dirs)
            }
            ZerothOrderConfig::SpsaGc { draws, c, gamma, .. } => {
                let ck = (c / ((step + 1) as f64).powf(gamma)) as f32;
                let deltas: Vec<Vec<f32>> = (0..draws)
                    .map(|_| {
                        mask.iter()
                            .map(|&m| {
                                let magnitude: f32 = rng.random_range(0.5..=1.0);
                                let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
                                if m { sign * magnitude } else { 0.0 }
                            })
                            .collect()
                    })
                    .collect();
                let points = deltas
                    .iter()
                    .flat_map(|d| [shift(w, d, ck), shift(w, d, -ck)])
                    .collect();
                (points, deltas)
            }
        }
    }

    /// Estimates the gradient of `loss` at `w`. `loss` receives all candidate points of the step
    /// at once ([`points_per_step`](Self::points_per_step) of them) and returns one loss per point.
    /// `mask` marks the coordinates that matter (`d` = how many are set); the estimate is zero
    /// elsewhere. `step` is the global step (counted from 0) and `rng` the step's generator.
    ///
    /// Returns the estimate and the losses of the candidate points, in the order given to `loss`.
    pub fn estimate(
        &self,
        w: &[f32],
        mask: &[bool],
        step: u64,
        rng: &mut StdRng,
        loss: impl FnOnce(&[Vec<f32>]) -> Result<Vec<f64>>,
    ) -> Result<(Vec<f32>, Vec<f64>)> {
        if w.len() != mask.len() {
            return Err(TrainError::Mismatch(format!(
                "{} values but a mask of {}",
                w.len(),
                mask.len()
            )));
        }
        let (points, perturbations) = self.candidates(w, mask, step, rng);
        let losses = loss(&points)?;
        if losses.len() != points.len() {
            return Err(TrainError::Mismatch(format!(
                "the loss returned {} values for {} points",
                losses.len(),
                points.len()
            )));
        }
        let mut g = vec![0.0f64; w.len()];
        match *self {
            ZerothOrderConfig::Rgf {
                directions,
                smoothing,
                ..
            } => {
                let d = mask.iter().filter(|&&m| m).count() as f64;
                for (u, l) in perturbations.iter().zip(&losses[1..]) {
                    let scale = d / directions as f64 * (l - losses[0]) / smoothing;
                    g.iter_mut().zip(u).for_each(|(g, &u)| *g += scale * u as f64);
                }
            }
            ZerothOrderConfig::SpsaGc { draws, c, gamma, .. } => {
                let ck = (c / ((step + 1) as f64).powf(gamma)) as f32 as f64;
                for (j, delta) in perturbations.iter().enumerate() {
                    let diff = losses[2 * j] - losses[2 * j + 1];
                    for (g, &dv) in g.iter_mut().zip(delta) {
                        if dv != 0.0 {
                            *g += diff / (2.0 * ck * dv as f64) / draws as f64;
                        }
                    }
                }
            }
        }
        Ok((g.into_iter().map(|v| v as f32).collect(), losses))
    }
}

/// The state of a zeroth-order optimiser: the config and, for SPSA-GC, the momentum `m`.
#[derive(Debug, Clone)]
pub struct ZerothOrderOptimizer {
    config: ZerothOrderConfig,
    momentum: Vec<f32>,
}

impl ZerothOrderOptimizer {
    /// A fresh optimiser.
    pub fn new(config: ZerothOrderConfig) -> Self {
        Self {
            config,
            momentum: Vec::new(),
        }
    }

    /// The config.
    pub fn config(&self) -> &ZerothOrderConfig {
        &self.config
    }

    /// The generator of step `step` of a run seeded with `seed`: a pure function of both, so a
    /// resumed run draws exactly the same perturbations.
    pub fn step_rng(seed: u64, step: u64) -> StdRng {
        StdRng::seed_from_u64(splitmix(splitmix(seed ^ 0x7a65_726f_7468_6f72) ^ step))
    }

    /// Applies the update of step `step` (from 0) of `total_steps` with gradient estimate `g`.
    pub fn update(&mut self, w: &mut [f32], g: &[f32], step: u64, total_steps: u64) {
        let lr = self.config.step_size(step, total_steps) as f32;
        match self.config {
            ZerothOrderConfig::Rgf { .. } => {
                w.iter_mut().zip(g).for_each(|(w, &g)| *w -= lr * g);
            }
            ZerothOrderConfig::SpsaGc { momentum, .. } => {
                let beta = momentum as f32;
                if self.momentum.len() != w.len() {
                    // m_1 = g_1: start from zero so that beta * 0 + g_1 = g_1.
                    self.momentum = vec![0.0; w.len()];
                }
                for ((w, m), &g) in w.iter_mut().zip(self.momentum.iter_mut()).zip(g) {
                    *m = beta * *m + g;
                    *w -= lr * (g + beta * *m);
                }
            }
        }
    }

    /// The state as bytes (the momentum, little-endian `f32`), for checkpoints.
    pub fn state(&self) -> Vec<u8> {
        self.momentum.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Restores a state written by [`state`](Self::state).
    pub fn with_state(mut self, bytes: &[u8]) -> std::result::Result<Self, String> {
        if !bytes.len().is_multiple_of(4) {
            return Err(format!("{} bytes is not a list of f32", bytes.len()));
        }
        self.momentum = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(self)
    }
}

/// SplitMix64's finaliser.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `L(w) = 0.5 sum a_i w_i^2 + b . w`, gradient `a * w + b`.
    struct Quadratic {
        a: Vec<f64>,
        b: Vec<f64>,
    }

    impl Quadratic {
        fn new(d: usize) -> Self {
            Self {
                a: (0..d).map(|i| 0.5 + (i % 7) as f64 * 0.25).collect(),
                b: (0..d).map(|i| ((i * 37 % 11) as f64 - 5.0) * 0.1).collect(),
            }
        }
        fn loss(&self, w: &[f32]) -> f64 {
            w.iter()
                .enumerate()
                .map(|(i, &x)| 0.5 * self.a[i] * (x as f64).powi(2) + self.b[i] * x as f64)
                .sum()
        }
        fn gradient(&self, w: &[f32]) -> Vec<f64> {
            w.iter()
                .enumerate()
                .map(|(i, &x)| self.a[i] * x as f64 + self.b[i])
                .collect()
        }
    }

    /// Mean of `||g_hat - g||^2 / ((d - 1) ||g||^2)` over `trials` draws, and the mean estimate.
    fn relative_mse(config: &ZerothOrderConfig, d: usize, trials: u64) -> (f64, Vec<f64>) {
        let f = Quadratic::new(d);
        let w: Vec<f32> = (0..d).map(|i| (i as f32 * 0.3).sin()).collect();
        let mask = vec![true; d];
        let g = f.gradient(&w);
        let norm2: f64 = g.iter().map(|v| v * v).sum();
        let mut mean = vec![0.0; d];
        let mut mse = 0.0;
        for t in 0..trials {
            let mut rng = ZerothOrderOptimizer::step_rng(t, 0);
            let (estimate, _) = config
                .estimate(&w, &mask, 0, &mut rng, |points| {
                    Ok(points.iter().map(|p| f.loss(p)).collect())
                })
                .unwrap();
            mse += estimate
                .iter()
                .zip(&g)
                .map(|(&e, &g)| (e as f64 - g).powi(2))
                .sum::<f64>();
            mean.iter_mut()
                .zip(&estimate)
                .for_each(|(m, &e)| *m += e as f64 / trials as f64);
        }
        (mse / trials as f64 / ((d - 1) as f64 * norm2), mean)
    }

    fn rgf(q: usize) -> ZerothOrderConfig {
        ZerothOrderConfig::Rgf {
            directions: q,
            smoothing: 1e-3,
            learning_rate: 0.01,
            learning_rate_min: 1e-4,
        }
    }

    fn spsa(q: usize) -> ZerothOrderConfig {
        ZerothOrderConfig::SpsaGc {
            draws: q,
            a: 1.0,
            c: 0.01,
            o: 0.0,
            alpha: 0.6,
            gamma: 0.1,
            momentum: 0.9,
        }
    }

    /// On a quadratic, RGF with unit-sphere directions has mean squared error
    /// `(d - 1) ||g||^2 / q` (exactly, up to the O(beta) forward-difference bias), and two-sided
    /// SPSA with `sign * U[0.5, 1]` coordinates has `E[D^2] E[1/D^2] (d - 1) ||g||^2 / q =
    /// (7/12)(2)(d - 1) ||g||^2 / q` (its central difference is exact on a quadratic). The
    /// measured errors must match these definitions and shrink as `1/q`.
    #[test]
    fn estimators_match_their_definitions_on_a_quadratic() {
        let d = 40;
        for (name, make, constant) in [
            ("rgf", rgf as fn(usize) -> ZerothOrderConfig, 1.0),
            ("spsa", spsa as fn(usize) -> ZerothOrderConfig, 7.0 / 6.0),
        ] {
            let mut previous = f64::INFINITY;
            for q in [1, 4, 16] {
                let (mse, mean) = relative_mse(&make(q), d, 400);
                let scaled = mse * q as f64 / constant;
                assert!(
                    (0.8..1.25).contains(&scaled),
                    "{name} q={q}: relative MSE {mse:.4}, x q / constant = {scaled:.3} (expected 1)"
                );
                assert!(mse < previous / 2.5, "{name}: error must shrink with q");
                previous = mse;
                if q == 16 {
                    // Unbiased: the mean of 400 estimates is close to the true gradient.
                    let f = Quadratic::new(d);
                    let w: Vec<f32> = (0..d).map(|i| (i as f32 * 0.3).sin()).collect();
                    let g = f.gradient(&w);
                    let err: f64 = mean.iter().zip(&g).map(|(m, g)| (m - g).powi(2)).sum::<f64>();
                    let norm2: f64 = g.iter().map(|v| v * v).sum();
                    assert!(
                        err / norm2 < 0.05,
                        "{name}: mean estimate off by {:.3}",
                        err / norm2
                    );
                }
            }
        }
    }

    #[test]
    fn masked_coordinates_are_never_perturbed_or_updated() {
        let d = 10;
        let mask: Vec<bool> = (0..d).map(|i| i % 2 == 0).collect();
        let w = vec![1.0f32; d];
        for config in [rgf(3), spsa(3)] {
            let mut rng = ZerothOrderOptimizer::step_rng(7, 3);
            let (g, _) = config
                .estimate(&w, &mask, 3, &mut rng, |points| {
                    assert_eq!(points.len(), config.points_per_step());
                    for p in points {
                        for i in (1..d).step_by(2) {
                            assert_eq!(p[i], 1.0, "masked coordinate perturbed");
                        }
                    }
                    Ok(points
                        .iter()
                        .map(|p| p.iter().map(|&v| (v as f64).powi(2)).sum())
                        .collect())
                })
                .unwrap();
            for i in (1..d).step_by(2) {
                assert_eq!(g[i], 0.0);
            }
            let mut updated = w.clone();
            ZerothOrderOptimizer::new(config).update(&mut updated, &g, 3, 10);
            for i in (1..d).step_by(2) {
                assert_eq!(updated[i], 1.0);
            }
        }
    }

    #[test]
    fn schedules_and_spsa_gc_momentum_follow_the_reference() {
        let r = ZerothOrderConfig::rgf();
        assert!((r.step_size(0, 100) - 0.01).abs() < 1e-12);
        assert!((r.step_size(90, 100) - 1e-4).abs() < 1e-12);
        assert!((r.step_size(99, 100) - 1e-4).abs() < 1e-12);
        let expected = (0.01 - 1e-4) * (1.0f64 - 45.0 / 90.0).powf(0.9) + 1e-4;
        assert!((r.step_size(45, 100) - expected).abs() < 1e-12);
        let s = ZerothOrderConfig::spsa_gc();
        assert!((s.step_size(0, 10) - 40.0).abs() < 1e-12);
        assert!((s.step_size(1, 10) - 40.0 / 2f64.powf(0.6)).abs() < 1e-12);

        // m_1 = g_1, w_1 = w_0 - a_1 (g_1 + 0.9 g_1); m_2 = 0.9 g_1 + g_2.
        let mut opt = ZerothOrderOptimizer::new(s);
        let mut w = vec![0.0f32];
        opt.update(&mut w, &[1.0], 0, 10);
        assert!((w[0] - (-40.0 * 1.9)).abs() < 1e-4);
        opt.update(&mut w, &[2.0], 1, 10);
        let a2 = 40.0 / 2f32.powf(0.6);
        assert!((w[0] - (-76.0 - a2 * (2.0 + 0.9 * 2.9))).abs() < 1e-3);
        let restored = ZerothOrderOptimizer::new(ZerothOrderConfig::spsa_gc())
            .with_state(&opt.state())
            .unwrap();
        assert_eq!(restored.momentum, vec![2.9]);
        assert!(
            ZerothOrderOptimizer::new(ZerothOrderConfig::spsa_gc())
                .with_state(&[0; 3])
                .is_err()
        );
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(ZerothOrderConfig::rgf().validate().is_ok());
        assert!(ZerothOrderConfig::spsa_gc().validate().is_ok());
        assert!(rgf(0).validate().is_err());
        assert!(spsa(0).validate().is_err());
        let ZerothOrderConfig::SpsaGc {
            a,
            c,
            o,
            alpha,
            gamma,
            draws,
            ..
        } = spsa(1)
        else {
            unreachable!()
        };
        let bad = ZerothOrderConfig::SpsaGc {
            draws,
            a,
            c,
            o,
            alpha,
            gamma,
            momentum: 1.0,
        };
        assert!(bad.validate().unwrap_err().to_string().contains("momentum"));
    }
}
