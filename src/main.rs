//! The `deploy-diagnosis` binary: parses the command line, loads configuration, sets up
//! logging and calls the library.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Mutex;

use async_trait::async_trait;
use clap::{Parser, Subcommand};

use deploy_diagnosis::config::{Config, Environment};
use deploy_diagnosis::diagnosis::Outcome;
use deploy_diagnosis::gate::{self, Gate};
use deploy_diagnosis::intake::webhook::{self, Limits};
use deploy_diagnosis::intake::{self, Subject};
use deploy_diagnosis::model::changes::Changes;
use deploy_diagnosis::model::report::FailureKind;
use deploy_diagnosis::pipeline::{Job, KnownEvidence, Ledger, Measured, Output};
use deploy_diagnosis::{startup, store, telemetry};

#[derive(Parser)]
#[command(
    name = "deploy-diagnosis",
    version,
    about = "Alert in, AI root-cause report out"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        short = 'f',
        long = "config",
        global = true,
        default_value = "etc/deploy-diagnosis.yaml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service and its workers.
    Serve,
    /// Diagnose one alert (JSON file, either webhook format) and print the report on stdout.
    Diagnose {
        /// The alert file.
        #[arg(long)]
        alert: PathBuf,
    },
    /// Create the store's tables or collections and indexes.
    Migrate,
    /// Ask a running service's analysis of a deployment until it decides, for a CI job:
    /// exit 0 proceed, 1 rollback, 2 still hold or inconclusive at the deadline, 3 the
    /// service could not be asked. The read token comes from DEPLOY_DIAGNOSIS_TOKEN. Needs
    /// no configuration file.
    Gate {
        /// The service's base URL (http://deploy-diagnosis:8080).
        #[arg(long)]
        url: String,
        /// The registered deployment's id.
        #[arg(long)]
        deployment: String,
        /// Keep asking this long while the answer is hold (10m, 90s); without it, ask once.
        #[arg(long, value_parser = deploy_diagnosis::gate::parse_duration)]
        wait: Option<std::time::Duration>,
        /// Between two questions.
        #[arg(long, default_value = "15s", value_parser = deploy_diagnosis::gate::parse_duration)]
        interval: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // `gate`'s 2 means "still hold": a command line it cannot read is 3, "could
            // not ask", so a CI job never mistakes a typo for a verdict.
            let gate = std::env::args().nth(1).as_deref() == Some("gate");
            return match (e.use_stderr(), gate) {
                (false, _) => ExitCode::SUCCESS,
                (true, true) => ExitCode::from(gate::Decision::Unreachable as u8),
                (true, false) => ExitCode::from(2),
            };
        }
    };
    if let Command::Gate {
        url,
        deployment,
        wait,
        interval,
    } = cli.command
    {
        return gate(Gate {
            url,
            deployment,
            wait,
            interval,
            token: std::env::var(gate::TOKEN_VAR).ok(),
        });
    }
    // `.env` in the working directory, as the design's `.env.template` suggests.
    let env = match Environment::from_process(Path::new(".")) {
        Ok(env) => env,
        Err(e) => return fail(&e.to_string()),
    };
    let config = match Config::load(&cli.config, &env) {
        Ok(config) => config,
        Err(e) => return fail(&e.to_string()),
    };
    telemetry::init(&config.log.level, config.log.format, config.secrets());
    for key in &config.unknown_keys {
        tracing::warn!(key, file = %cli.config.display(), "not a configuration key of this service; ignored");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("starting the async runtime: {e}")),
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::Diagnose { alert } => diagnose(config, &alert).await,
            Command::Migrate => migrate(config).await,
            Command::Gate { .. } => unreachable!("answered before the configuration is read"),
        }
    })
}

/// `gate`: no configuration, no logging set up; what it hears goes to stdout.
fn gate(asked: Gate) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("deploy-diagnosis: starting the async runtime: {e}");
            return ExitCode::from(gate::Decision::Unreachable as u8);
        }
    };
    let decision = runtime.block_on(async {
        let mut out = std::io::stdout();
        gate::run(&asked, &mut out).await
    });
    ExitCode::from(decision as u8)
}

/// Says why the command stopped, with any URL's credentials masked: a configuration error
/// quotes the value it refuses (`AI.BaseURL: "ftp://user:pass@…" is not an http:// …`).
fn fail(message: &str) -> ExitCode {
    eprintln!(
        "deploy-diagnosis: {}",
        deploy_diagnosis::redact::redact_url_credentials(message)
    );
    ExitCode::FAILURE
}

async fn serve(config: Config) -> ExitCode {
    let address = format!("{}:{}", config.host, config.port);
    let listener = match tokio::net::TcpListener::bind(&address).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("listening on {address}: {e}")),
    };
    match startup::run(listener, config, startup::shutdown_on_signals()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

async fn migrate(config: Config) -> ExitCode {
    match store::open(&config).await {
        Ok(_) => {
            println!("migrated the {:?} store", config.store.kind);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// The `diagnose` command's ledger: no store, no registry (attribution by host and the
/// deployments registry need the service); evidence is gathered here, and every stage's
/// output is kept for the printed report.
#[derive(Default)]
struct Printed {
    measured: Mutex<Option<Measured>>,
    changes: Mutex<Option<Changes>>,
}

#[async_trait]
impl Ledger for Printed {
    async fn evidence(&self) -> KnownEvidence {
        KnownEvidence::GatherHere
    }

    async fn admit_ai(&self) -> Result<(), String> {
        Ok(())
    }

    async fn record(&self, output: Output<'_>) {
        match output {
            Output::Measured(measured) => {
                if let Err(why) = &measured.evidence {
                    tracing::warn!(error = %why, "evidence could not be gathered")
                }
                *self.measured.lock().unwrap_or_else(|p| p.into_inner()) = Some(measured.clone())
            }
            Output::Changes(changes) => {
                *self.changes.lock().unwrap_or_else(|p| p.into_inner()) = Some(changes.clone())
            }
        }
    }
}

async fn diagnose(config: Config, path: &Path) -> ExitCode {
    let body = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return fail(&format!("reading {}: {e}", path.display())),
    };
    let now = chrono::Utc::now();
    let limits = Limits::of(&config.webhook);
    let alerts = match webhook::parse_webhook(&body, &now.to_rfc3339(), &limits) {
        Ok(a) => a,
        Err(e) => return fail(&format!("{}: at {}: {}", path.display(), e.path, e.message)),
    };
    let mut reasons = Vec::new();
    // The intake's own decision; attribution by host needs the registry (the service).
    let Some((id, alert)) = alerts.into_iter().find_map(|a| match intake::subject(&a) {
        Ok(Subject {
            firing: true,
            deployment_id: Some(id),
        }) => Some((id, a)),
        Ok(Subject { firing: false, .. }) => {
            reasons.push(format!(
                "alert status is {:?}, not \"firing\"",
                a.status.as_str()
            ));
            None
        }
        Ok(_) => {
            reasons.push(
                "alert has no labels.deploymentId (attribution by host needs the service's \
                 deployments registry)"
                    .into(),
            );
            None
        }
        Err(skip) => {
            reasons.push(skip.reason());
            None
        }
    }) else {
        return fail(&format!(
            "{}: no alert to diagnose ({})",
            path.display(),
            reasons.join("; ")
        ));
    };
    let runner = match startup::build_runner(&config, Default::default()).await {
        Ok(runner) => runner,
        Err(e) => return fail(&e.to_string()),
    };
    let pipeline = match startup::pipeline(&config, runner) {
        Ok(pipeline) => pipeline,
        Err(e) => return fail(&e.to_string()),
    };
    let job = Job {
        deployment_id: id,
        alert,
        received: now,
        deployment: None,
        changes: None,
        related: Vec::new(),
    };
    let printed = Printed::default();
    let outcome = pipeline
        .run(job, &printed, startup::shutdown_on_signals())
        .await;
    let measured = printed
        .measured
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let gathered = measured.as_ref().and_then(|m| m.evidence.as_ref().ok());
    let evidence = gathered.map(|g| &g.items);
    let unmeasured = gathered.and_then(|g| g.unmeasured.as_ref());
    let release = outcome.as_ref().ok().map(|ran| ran.release.clone());
    let changes = printed
        .changes
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let (json, code) = match outcome.map(|ran| ran.diagnosed.outcome) {
        Ok(Outcome::Completed {
            body,
            engine,
            ai_failure,
        }) => (
            serde_json::json!({"status": "completed", "engine": engine, "promQL": body.prom_ql,
                "content": body.content, "aiError": ai_failure.map(|f| f.reason), "evidence": evidence,
                "unmeasuredHosts": unmeasured, "changes": changes, "release": release}),
            ExitCode::SUCCESS,
        ),
        Ok(Outcome::Failed { kind, reason, .. }) => (
            serde_json::json!({"status": "failed", "kind": FailureKind::as_str(kind), "error": reason,
                "evidence": evidence, "unmeasuredHosts": unmeasured, "changes": changes,
                "release": release}),
            ExitCode::FAILURE,
        ),
        Err(_) => return fail("interrupted"),
    };
    match serde_json::to_string_pretty(&json) {
        Ok(text) => println!("{text}"),
        Err(e) => return fail(&format!("printing the report: {e}")),
    }
    code
}
