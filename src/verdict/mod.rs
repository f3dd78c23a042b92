//! The release verdict: was it this release, and should it be rolled back? Built from
//! canary-vs-control and before-vs-after comparisons of the released hosts' signals.
//!
//! - [`stats`]: the Mann-Whitney U test and the effect size the comparisons use.
//! - [`red`]: the application's RED query templates, made for one host.

pub mod red;
pub mod stats;
