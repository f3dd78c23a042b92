//! `Runner.Kind: docker`: the design's managed container, driven through the Docker API
//! (bollard; no `docker` CLI).
//!
//! The container (`diagnosis-service` from `diagnosis-service:latest`) is used if running,
//! started if stopped, created if absent (restart policy `unless-stopped`), and recreated
//! when its settings no longer match the configuration. It runs hardened: as
//! `Docker.User` (the image's non-root user, never root), a read-only root filesystem
//! with a tmpfs `/tmp`, all capabilities dropped, `no-new-privileges`, memory/CPU/pids
//! limits, and on its own network (`Docker.Network: bridge`): it reaches the host only as
//! `host.docker.internal` (a loopback `AI.PrometheusURL` is rewritten to it), not the
//! host's loopback-only services, and its MCP server listens on the container's own
//! loopback. Its main process is the Prometheus MCP server over HTTP, so a diagnosis does
//! not pay for spawning it; when `AI.PrometheusURL` carries credentials, which the
//! container's configuration would show (`docker inspect`), the main process only waits
//! and each run starts its own, private server instead.
//!
//! Each diagnosis is one exec of the Python runner. Secrets and the prompt go on its stdin
//! ([`python::secrets_line`]): argv and the exec's environment show in `docker inspect`
//! and to every process of the container's user. At the deadline the runner's processes
//! inside the container are killed (`kill_run.py`): dropping the exec's stream would leave
//! them running.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
    StartContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::python::{self, runner_args, Capture};
use super::{Cancelled, Failure, RunRequest, RunResult, Runner, RunnerError};
use crate::config::{Config, DockerConfig, Secret};
use crate::metrics::{ExecStep, Metrics};
use crate::model::report::FailureKind;
use crate::model::report::RunnerKind;

/// Where the image keeps the runner and its interpreter.
const PYTHON: &str = "/opt/venv/bin/python";
const SCRIPT: &str = "/app/diagnosis_runner.py";
const KILLER: &str = "/app/kill_run.py";
/// Label holding a hash of the settings the container was created with.
const CONFIG_LABEL: &str = "io.deploy-diagnosis.config";
/// The host's name inside a container on its own network (Docker's `host-gateway`).
pub const HOST_ALIAS: &str = "host.docker.internal";

/// `url` as a container on `network` reaches it: on any network but `host`, a loopback
/// host (`localhost`, `127.0.0.0/8`, `::1`) is the container's own, so it becomes
/// [`HOST_ALIAS`]; Prometheus must then listen where the bridge reaches it.
pub fn reachable_from(network: &str, url: &str) -> String {
    if network == "host" {
        return url.to_owned();
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if loopback && parsed.set_host(Some(HOST_ALIAS)).is_ok() {
        // `Url` adds a `/` path to a bare origin: give the URL back as it was written.
        let text = parsed.to_string();
        return match url.ends_with('/') {
            true => text,
            false => text.trim_end_matches('/').to_owned(),
        };
    }
    url.to_owned()
}

/// Runs the Python runner inside the managed container.
pub struct DockerRunner {
    docker: Docker,
    cfg: DockerConfig,
    /// `AI.PrometheusURL` as the container reaches it, credentials and all.
    prometheus_url: String,
    /// The same without credentials.
    prometheus_shown: String,
    /// Whether it carries credentials (then no container setting holds it).
    prometheus_credentials: bool,
    args: Vec<String>,
    api_key: Secret,
    github_token: Secret,
    output_max_bytes: usize,
    metrics: Arc<Metrics>,
    /// One container check-and-fix at a time.
    ensure: tokio::sync::Mutex<()>,
    /// Why the last check-and-fix failed (`None`: it did not), for readiness.
    last_failure: std::sync::Mutex<Option<String>>,
}

fn docker_error(context: &str, e: bollard::errors::Error) -> RunnerError {
    RunnerError::Unavailable(format!("{context}: {e}"))
}

fn image_missing(image: &str) -> String {
    format!("docker image {image} not found: build it with docker/build.sh (see docs/runners.md), or set Docker.Image")
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerRunner {
    /// Connects to the engine (lazily: the first call reaches it).
    pub async fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, RunnerError> {
        let cfg = config.docker.clone();
        let socket = cfg
            .host
            .strip_prefix("unix://")
            .unwrap_or(&cfg.host)
            .to_owned();
        let docker = Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| docker_error(&format!("docker engine at {}", cfg.host), e))?;
        // Debian's engine speaks an older API than bollard's default; agree on one.
        let docker = match docker.clone().negotiate_version().await {
            Ok(negotiated) => negotiated,
            Err(e) => {
                tracing::warn!(error = %e, host = %cfg.host, "docker engine unreachable; will retry on first use");
                docker
            }
        };
        let prometheus_url = reachable_from(&cfg.network, config.ai.prometheus_url.as_str());
        let prometheus_credentials = url::Url::parse(&prometheus_url)
            .is_ok_and(|u| !u.username().is_empty() || u.password().is_some());
        let mut args = runner_args(config);
        if !prometheus_credentials {
            args.extend([
                "--prometheus-mcp-url".into(),
                format!("http://127.0.0.1:{}/mcp", cfg.mcp_port),
            ]);
        }
        Ok(Self {
            docker,
            prometheus_shown: crate::redact::redact_url_credentials(&prometheus_url),
            prometheus_url,
            prometheus_credentials,
            args,
            api_key: config.ai.api_key.clone(),
            github_token: config.ai.github_token.clone(),
            output_max_bytes: config.runner.output_max_bytes,
            metrics,
            cfg,
            ensure: tokio::sync::Mutex::new(()),
            last_failure: std::sync::Mutex::new(None),
        })
    }

    /// What the container must have been created with; a change means recreate. FNV-1a
    /// rather than std's hasher, whose output may change between Rust releases (which
    /// would recreate every container after a toolchain upgrade).
    fn settings_hash(&self) -> String {
        let c = &self.cfg;
        // The URL without its credentials: the label is readable by anyone who can inspect
        // the container, and no credential is in the container any more.
        let settings = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            c.image,
            c.network,
            c.user,
            c.memory_bytes,
            c.pids_limit,
            c.tmpfs_bytes,
            c.mcp_port,
            c.cpus,
            self.prometheus_shown,
            self.prometheus_credentials
        );
        let hash = settings.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("{hash:016x}")
    }

    fn container_body(&self) -> ContainerCreateBody {
        let c = &self.cfg;
        let (env, cmd) = if self.prometheus_credentials {
            // Each run starts its own private server with the URL it gets on stdin.
            let wait = vec![
                PYTHON.to_owned(),
                "-c".to_owned(),
                "import signal; signal.pause()".to_owned(),
            ];
            (Vec::new(), Some(wait))
        } else {
            let env = vec![
                format!("PROMETHEUS_URL={}", self.prometheus_url),
                "PROMETHEUS_MCP_SERVER_TRANSPORT=http".to_owned(),
                // The container's own loopback (the host's with `Network: host`).
                "PROMETHEUS_MCP_BIND_HOST=127.0.0.1".to_owned(),
                format!("PROMETHEUS_MCP_BIND_PORT={}", c.mcp_port),
            ];
            (env, None)
        };
        let extra_hosts = (c.network != "host").then(|| vec![format!("{HOST_ALIAS}:host-gateway")]);
        ContainerCreateBody {
            image: Some(c.image.clone()),
            user: Some(c.user.clone()),
            cmd,
            env: Some(env),
            labels: Some(HashMap::from([
                ("io.deploy-diagnosis.managed".to_owned(), "true".to_owned()),
                (CONFIG_LABEL.to_owned(), self.settings_hash()),
            ])),
            host_config: Some(HostConfig {
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_owned(),
                    format!("rw,noexec,nosuid,nodev,size={}", c.tmpfs_bytes),
                )])),
                memory: Some(c.memory_bytes),
                nano_cpus: Some((c.cpus * 1e9) as i64),
                pids_limit: Some(c.pids_limit),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                privileged: Some(false),
                network_mode: Some(c.network.clone()),
                extra_hosts,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The design's `ensureContainer`: use it if running, start it if stopped, create it
    /// if absent (or stale).
    pub async fn ensure_container(&self) -> Result<(), RunnerError> {
        let _one_at_a_time = self.ensure.lock().await;
        let result = self.ensure_locked().await;
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) =
            result.as_ref().err().map(|e| e.to_string());
        result
    }

    async fn ensure_locked(&self) -> Result<(), RunnerError> {
        let name = self.cfg.container.as_str();
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                let labels = info.config.as_ref().and_then(|c| c.labels.as_ref());
                let current = labels.and_then(|l| l.get(CONFIG_LABEL)).cloned();
                if current.as_deref() != Some(self.settings_hash().as_str()) {
                    tracing::info!(
                        container = name,
                        "container settings changed; recreating it"
                    );
                    self.docker
                        .remove_container(
                            name,
                            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                        )
                        .await
                        .map_err(|e| {
                            docker_error(&format!("removing stale container {name}"), e)
                        })?;
                    return self.create_and_start().await;
                }
                let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
                if running {
                    return Ok(());
                }
                tracing::info!(container = name, "starting the stopped runner container");
                self.start("started").await
            }
            Err(e) if is_not_found(&e) => self.create_and_start().await,
            Err(e) => Err(docker_error(
                &format!("docker engine at {}", self.cfg.host),
                e,
            )),
        }
    }

    async fn create_and_start(&self) -> Result<(), RunnerError> {
        let (name, image) = (self.cfg.container.as_str(), self.cfg.image.as_str());
        match self.docker.inspect_image(image).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                return Err(RunnerError::Unavailable(image_missing(image)))
            }
            Err(e) => return Err(docker_error(&format!("inspecting image {image}"), e)),
        }
        tracing::info!(container = name, image, "creating the runner container");
        self.docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(name).build()),
                self.container_body(),
            )
            .await
            .map_err(|e| docker_error(&format!("creating container {name}"), e))?;
        self.start("created").await
    }

    /// Starts the container and counts it (`created` or `started`).
    async fn start(&self, action: &str) -> Result<(), RunnerError> {
        let name = self.cfg.container.as_str();
        self.docker
            .start_container(name, None::<StartContainerOptions>)
            .await
            .map_err(|e| docker_error(&format!("starting container {name}"), e))?;
        self.metrics.container_start(action);
        Ok(())
    }

    /// Stops every process of one run inside the container.
    async fn kill_run(&self, run_id: &str) {
        let cmd = vec![PYTHON.to_owned(), KILLER.to_owned(), run_id.to_owned()];
        let result = async {
            let exec = self
                .docker
                .create_exec(
                    &self.cfg.container,
                    CreateExecOptions::<String> {
                        cmd: Some(cmd),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            if let StartExecResults::Attached { mut output, .. } =
                self.docker.start_exec(&exec.id, None).await?
            {
                while output.next().await.is_some() {}
            }
            Ok::<_, bollard::errors::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(15), result).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.metrics.exec_failure(ExecStep::Kill);
                tracing::error!(error = %e, run_id, "could not stop the runner inside the container");
            }
            Err(_) => {
                self.metrics.exec_failure(ExecStep::Kill);
                tracing::error!(run_id, "stopping the runner inside the container timed out");
            }
        }
    }

    async fn exec_run(
        &self,
        request: &RunRequest,
        run_id: &str,
        out: &Capture,
        err: &Capture,
    ) -> Result<Option<i32>, bollard::errors::Error> {
        let env = vec![
            format!("DD_DEPLOYMENT_ID={}", request.deployment_id),
            format!("DD_RUN_ID={run_id}"),
        ];
        let mut cmd = vec![PYTHON.to_owned(), SCRIPT.to_owned()];
        cmd.extend(self.args.iter().cloned());
        cmd.extend(python::run_args(request));
        // The runner is not dumpable, so its environment cannot be read inside the
        // container: `kill_run.py` finds it by this flag.
        cmd.extend(["--run-id".to_owned(), run_id.to_owned()]);
        // A docker exec's stdin is not reliably closed by the client, so the runner is told
        // how many bytes of prompt follow the secrets' line instead of waiting for
        // end-of-file.
        cmd.extend([
            "--prompt-bytes".to_owned(),
            request.prompt.len().to_string(),
        ]);
        let exec = self
            .docker
            .create_exec(
                &self.cfg.container,
                CreateExecOptions::<String> {
                    cmd: Some(cmd),
                    env: Some(env),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    working_dir: Some("/app".to_owned()),
                    ..Default::default()
                },
            )
            .await?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await?;
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = started
        else {
            return Ok(None);
        };
        let secrets = python::secrets_line(&self.api_key, &self.github_token, &self.prometheus_url);
        input
            .write_all((secrets + &request.prompt).as_bytes())
            .await
            .map_err(bollard::errors::Error::from)?;
        input.flush().await.map_err(bollard::errors::Error::from)?;
        while let Some(item) = output.next().await {
            match item? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    out.push(&message)
                }
                LogOutput::StdErr { message } => err.push(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
        drop(input);
        let inspected = self.docker.inspect_exec(&exec.id).await?;
        Ok(inspected.exit_code.map(|c| c as i32))
    }
}

#[async_trait]
impl Runner for DockerRunner {
    fn kind(&self) -> RunnerKind {
        RunnerKind::Docker
    }

    async fn run(
        &self,
        request: RunRequest,
        cancel: CancellationToken,
    ) -> Result<RunResult, Cancelled> {
        let deadline = tokio::time::Instant::now() + request.deadline;
        tokio::select! {
            ensured = self.ensure_container() => if let Err(RunnerError::Unavailable(why)) = ensured {
                return Ok(Failure::new(FailureKind::RunnerUnavailable, why).into());
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(Failure::deadline(request.deadline).into());
            }
            _ = cancel.cancelled() => return Err(Cancelled),
        }
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let (out, err) = (
            Capture::new(self.output_max_bytes),
            Capture::new(self.output_max_bytes),
        );
        enum End {
            Exited(Result<Option<i32>, bollard::errors::Error>),
            Deadline,
            Cancelled,
        }
        let end = tokio::select! {
            result = self.exec_run(&request, &run_id, &out, &err) => End::Exited(result),
            _ = tokio::time::sleep_until(deadline) => End::Deadline,
            _ = cancel.cancelled() => End::Cancelled,
        };
        if matches!(end, End::Deadline | End::Cancelled) {
            self.kill_run(&run_id).await;
        }
        let (stdout, stderr) = (out.text(), err.text());
        match end {
            End::Exited(Ok(code)) => Ok(python::read(&stdout, &stderr, code)),
            End::Exited(Err(e)) => {
                self.metrics.exec_failure(ExecStep::Exec);
                Ok(python::stopped(
                    &stdout,
                    &stderr,
                    Failure::new(
                        FailureKind::RunnerUnavailable,
                        format!(
                            "running the runner in container {}: {e}",
                            self.cfg.container
                        ),
                    ),
                ))
            }
            End::Deadline => Ok(python::stopped(
                &stdout,
                &stderr,
                Failure::deadline(request.deadline),
            )),
            End::Cancelled => Err(Cancelled),
        }
    }

    /// One Docker call: the container's state (the engine answers, and its image was there
    /// when it was made). An absent container is ready unless the last attempt to make it
    /// failed (a missing image): that reason is the answer.
    async fn check(&self) -> Result<serde_json::Value, String> {
        let container = match self
            .docker
            .inspect_container(&self.cfg.container, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info
                .state
                .and_then(|s| s.status)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
            Err(e) if is_not_found(&e) => {
                let failed = self
                    .last_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if let Some(why) = failed {
                    return Err(why);
                }
                "absent (created on first diagnosis)".into()
            }
            Err(e) => {
                return Err(format!(
                    "docker engine at {}: inspecting container {}: {e}",
                    self.cfg.host, self.cfg.container
                ))
            }
        };
        Ok(json!({
            "image": self.cfg.image,
            "container": self.cfg.container,
            "containerState": container,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_prometheus_is_the_host_from_a_container_of_its_own() {
        let bridge = |url| reachable_from("bridge", url);
        assert_eq!(
            bridge("http://127.0.0.1:9090"),
            "http://host.docker.internal:9090"
        );
        assert_eq!(
            bridge("http://u:p@localhost:9090/prom/"),
            "http://u:p@host.docker.internal:9090/prom/"
        );
        assert_eq!(
            bridge("http://[::1]:9090"),
            "http://host.docker.internal:9090"
        );
        assert_eq!(
            bridge("http://prometheus.internal:9090"),
            "http://prometheus.internal:9090"
        );
        assert_eq!(
            reachable_from("host", "http://127.0.0.1:9090"),
            "http://127.0.0.1:9090",
            "the host's network: loopback is the host's"
        );
    }
}
