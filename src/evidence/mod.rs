//! The evidence stage: facts the service measures itself, straight from the Prometheus
//! HTTP API, before any runner starts, so every runner and every model starts from the
//! same numbers (the design's 异常检测 step, §11.2). It returns what it measured; the
//! worker stores it.
//!
//! - [`prometheus`]: the HTTP API client.
//! - [`signals`]: the catalogue (a USE pack for the node, and the alert's own rule).
//! - [`score`]: a robust deviation of the incident from the baseline, and saturation.
//! - [`gather`]: targets, windows, one range query per signal, ranked items.

pub mod gather;
pub mod prometheus;
pub mod score;
pub mod signals;

pub use gather::{Gatherer, Windows};
pub use prometheus::{EvidenceError, Prometheus};
