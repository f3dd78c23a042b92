//! The release verdict: was it this release, and should it be rolled back? Built from
//! canary-vs-control and before-vs-after comparisons of the released hosts' signals, with
//! the tests of [`crate::stats`].
//!
//! - [`red`]: the application's RED query templates, made for one host.
//! - [`compare`]: one signal's comparisons across the hosts (canary, before/after, the
//!   controls against themselves, what was there before the release).
//! - [`rules`]: the verdict and the recommendation from the comparisons.
//! - [`measure`]: the [`Judge`], which reads every host's signals from Prometheus.
//! - [`analysis`]: the [`Analyst`], the release measured on demand for a deploy tool.

pub mod analysis;
pub mod compare;
pub mod measure;
pub mod red;
pub mod rules;

pub use analysis::Analyst;
pub use measure::Judge;
