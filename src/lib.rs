//! deploy-diagnosis: Prometheus Alertmanager posts an alert about a deployment; the service
//! records a `generating` report, measures the evidence, reads the release's changes, an
//! AI agent queries Prometheus (and GitHub) through MCP tools, and the answer is stored as
//! `completed` or `failed` with a reason.
//!
//! # Layout
//!
//! In the order an alert flows through the service. Imports point down this list's layers
//! only (`tests/api/architecture.rs` checks it): [`model`] at the bottom imports nothing
//! else of the crate, [`startup`] at the top wires everything.
//!
//! - [`model`]: plain data: alerts, deployments, evidence items, changes, reports.
//! - [`config`]: the typed configuration (`etc/deploy-diagnosis.yaml`, `${VAR}`, `DD_*`).
//! - [`redact`], [`outside`], [`tls`], [`telemetry`], [`metrics`]: secrets scrubbed from
//!   everything that leaves, outside numbers clamped before arithmetic, the HTTP clients'
//!   TLS, logging, `/metrics`.
//! - [`store`]: reports (the durable queue) and the deployments registry; `embedded`
//!   (SQLite) and `mongo`, and the rules both follow.
//! - [`intake`]: what each alert does: the webhook bodies, its deployment, the report's
//!   lifecycle.
//! - [`evidence`]: facts measured from Prometheus (client, signals, scoring, gathering).
//! - [`changes`]: the release's changes from GitHub, admitted and ranked as suspects.
//! - [`notify`]: the sinks a finished report goes to, and one delivery to each.
//! - [`verdict`]: whether the release caused it, from canary and before/after comparisons.
//! - [`runner`]: the `Runner` trait; `native` (the agent loop in the service), `process`
//!   and `docker` (the Python runner); providers; the report pulled out of the answer.
//! - [`diagnosis`]: the prompt, the diagnosis, the report written from the evidence.
//! - [`pipeline`]: the stages in order, once: deployment → evidence → changes → diagnosis.
//! - [`worker`]: the pool that claims reports and runs the pipeline; the evidence pool;
//!   the outbox's deliveries; leases, budgets, the queue gate.
//! - [`http`]: the routes, one file a resource; tokens; the error type.
//! - [`startup`]: wiring it together and running until shutdown.
//! - [`gate`]: beside it, the CI client of the analysis (`deploy-diagnosis gate`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod changes;
pub mod config;
pub mod diagnosis;
pub mod evidence;
pub mod gate;
pub mod http;
pub mod intake;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod outside;
pub mod pipeline;
pub mod redact;
pub mod runner;
pub mod startup;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod verdict;
pub mod worker;
