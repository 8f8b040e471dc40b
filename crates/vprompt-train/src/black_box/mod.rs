//! Black-box prompting (paper section 2.3: "users can feed domain-adapted images to online APIs
//! that can only be manipulated via their inputs"): a model behind [`BlackBoxModel`] (images in,
//! scores out), zeroth-order optimisers that estimate gradients from loss values only
//! ([`ZerothOrderConfig`]: RGF and SPSA-GC), and [`BlackBoxTrainer`], the engine's harness with
//! every query counted and an optional budget.

mod model;
mod trainer;
mod zeroth_order;

pub use model::{BlackBoxModel, BlackBoxReport, LocalModel, QueryError, Scores, evaluate_black_box};
pub use trainer::{BlackBoxConfig, BlackBoxTrained, BlackBoxTrainer};
pub use zeroth_order::{ZerothOrderConfig, ZerothOrderOptimizer};
