//! deploy-diagnosis: Prometheus Alertmanager posts an alert about a deployment; the service
//! records a `generating` report, an AI agent queries Prometheus (and GitHub) through MCP
//! tools, and the answer is stored as `completed` or `failed` with a reason.
//!
//! # Layout
//!
//! - [`config`] — the typed configuration (`etc/deploy-diagnosis.yaml`, `${VAR}`, `DD_*`):
//!   sections and defaults, sources and overrides, secrets, values parsed into their types.
//! - [`alert`] — the two webhook bodies, parsed into one alert shape.
//! - [`report`] — the report model and its statuses.
//! - [`deployment`] — the deployments registry's model, and alert attribution by host.
//! - [`store`] — the `ReportStore` trait; `embedded` (SQLite) and `mongo`.
//! - [`prompt`] — the design's prompt, with alert data fenced.
//! - [`provider`] — what each AI provider needs in a request (token limit, extra fields).
//! - [`runner`] — the `Runner` trait and its typed result; `native` (the agent loop in the
//!   service), `process` and `docker` (the Python runner, its protocol in `python`).
//! - [`extract`] — pulling the JSON report out of the model's answer.
//! - [`evidence`] — facts measured from Prometheus before the runner starts, ranked.
//! - [`changes`] — what a release changed, and its suspects for the measured failure.
//! - [`github`] — reading a release's changes from the GitHub REST API, read-only.
//! - [`evidence_report`] — the report written from the evidence when no AI analysis could
//!   be had.
//! - [`budget`] — AI diagnoses per hour and tokens per day.
//! - [`diagnosis`] — one diagnosis, and every failure turned into a reason.
//! - [`worker`] — the pool that claims reports from the store and runs them.
//! - [`intake`] — what each alert does: its deployment, and the report's lifecycle.
//! - [`api`] — the HTTP routes.
//! - [`auth`] — read and write tokens, Bearer or Basic.
//! - [`metrics`] — `/metrics`.
//! - [`redact`] — secrets and URL credentials scrubbed from everything that leaves.
//! - [`telemetry`] — logging setup, every line scrubbed.
//! - [`startup`] — wiring it together and running until shutdown.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alert;
pub mod api;
pub mod auth;
pub mod budget;
pub mod changes;
pub mod config;
pub mod deployment;
pub mod diagnosis;
pub mod evidence;
pub mod evidence_report;
pub mod extract;
pub mod github;
pub mod intake;
pub mod metrics;
pub mod prompt;
pub mod provider;
pub mod redact;
pub mod report;
pub mod runner;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;
