//! Integration tests: the real service on port 0, the real Python runner, real Prometheus
//! and node_exporter, real SecantusDB for the mongo store. The only fakes are the LLM and
//! GitHub, which no machine here can reach; both enforce the real services' request rules.

mod fake_chat;
mod fake_github;
mod fake_llm;
mod helpers;
mod servers;

mod alertmanager;
mod architecture;
mod auth;
mod budget;
mod changes;
mod cli;
mod crash_recovery;
mod demo;
mod deployments;
mod diagnosis;
mod docker_runner;
mod docs;
mod evidence;
mod failures;
mod fake_llm_rules;
mod github_mcp;
mod http_limits;
mod intake;
mod intake_properties;
mod lifecycle;
mod live_llm;
mod native_runner;
mod notify;
mod openapi;
mod providers;
mod range_summary;
mod readiness;
mod real_answers;
mod receiver;
mod release_verdict;
mod reports;
mod rollout_tools;
mod store_contract;
mod tls;
mod ui;
mod url_credentials;
mod worker_faults;
