//! The floor: plain data with no I/O, importing nothing else of the crate. Every other
//! module speaks in these types.
//!
//! - [`alert`]: an alert, its status and times parsed once, the deployment id.
//! - [`deployment`]: a registered deployment, repository names, host keys.
//! - [`evidence`]: a measured fact as stored on a report.
//! - [`changes`]: what a release changed, and the release a diagnosis reads.
//! - [`report`]: a report, its answer, how a diagnosis ended, its history.
//! - [`budget`]: the AI budgets' ledger, counted by the minute.
//! - [`notify`]: notifications of finished reports, as the outbox keeps them.
//! - [`verdict`]: the release verdict, its recommendation and comparisons.

pub mod alert;
pub mod budget;
pub mod changes;
pub mod deployment;
pub mod evidence;
pub mod notify;
pub mod report;
pub mod verdict;
