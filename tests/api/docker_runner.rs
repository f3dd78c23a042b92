//! `Runner.Kind: docker` against a real Docker engine (started by `scripts/docker-setup`,
//! with the `diagnosis-service:latest` image built offline from a debootstrap base).

use std::time::{Duration, Instant};

use bollard::query_parameters::{
    InspectContainerOptions, RemoveContainerOptionsBuilder, StopContainerOptions, TopOptions,
};
use bollard::Docker;
use reqwest::StatusCode;

use crate::fake_llm::Script;
use crate::helpers::{
    alertmanager_body, deployment_id, report_error, spawn_app, DockerOptions, Options, TestApp,
};
use crate::servers::{docker_client, free_port};

/// The engine (whose first use removes the test containers an earlier run left).
async fn docker() -> Docker {
    docker_client().await
}

async fn remove(docker: &Docker, name: &str) {
    let _ = docker
        .remove_container(
            name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
}

async fn container_id(docker: &Docker, name: &str) -> (String, bool) {
    let info = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .unwrap();
    (
        info.id.unwrap(),
        info.state.and_then(|s| s.running).unwrap_or(false),
    )
}

async fn diagnose(app: &TestApp, prefix: &str) -> serde_json::Value {
    let id = deployment_id(prefix);
    let (status, body) = app.post_alerts(&alertmanager_body(&id, "firing")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_final(&id).await
}

/// The command lines of the container's running execs.
async fn exec_argvs(docker: &Docker, name: &str) -> Vec<String> {
    let info = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let mut argvs = Vec::new();
    for id in info.exec_ids.unwrap_or_default() {
        if let Ok(exec) = docker.inspect_exec(&id).await {
            if let Some(pc) = exec.process_config {
                argvs.push(format!(
                    "{} {}",
                    pc.entrypoint.unwrap_or_default(),
                    pc.arguments.unwrap_or_default().join(" ")
                ));
            }
        }
    }
    argvs
}

#[tokio::test]
async fn the_docker_runner_creates_starts_and_recreates_its_hardened_container() {
    let docker = docker().await;
    let opts = DockerOptions::unique("lifecycle");
    let name = opts.container.clone();
    remove(&docker, &name).await;
    let app = spawn_app(Options {
        docker: Some(opts.clone()),
        ..Options::default()
    })
    .await;

    // Absent: created (at startup, as the design does) and used.
    let report = diagnose(&app, "dk1").await;
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["runner"], "docker");
    assert!(
        report["content"]
            .as_str()
            .unwrap()
            .contains(&app.prom.node_instance),
        "{report:#}"
    );
    let (first_id, running) = container_id(&docker, &name).await;
    assert!(running);

    // Hardened as configured.
    let info = docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let host = info.host_config.unwrap();
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.memory, Some(536_870_912));
    assert_eq!(host.pids_limit, Some(128));
    assert_eq!(
        host.restart_policy
            .and_then(|p| p.name)
            .map(|n| n.to_string()),
        Some("unless-stopped".into())
    );
    assert_eq!(
        info.config.and_then(|c| c.user).as_deref(),
        Some("10001:10001")
    );

    // Stopped: started again.
    docker
        .stop_container(&name, None::<StopContainerOptions>)
        .await
        .unwrap();
    assert_eq!(diagnose(&app, "dk2").await["status"], "completed");
    let (second_id, running) = container_id(&docker, &name).await;
    assert!(running);
    assert_eq!(second_id, first_id, "the same container was started");

    // Removed (`docker rm -f`): created anew.
    remove(&docker, &name).await;
    assert_eq!(diagnose(&app, "dk3").await["status"], "completed");
    let (third_id, running) = container_id(&docker, &name).await;
    assert!(running);
    assert_ne!(third_id, first_id, "a new container was created");

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("deploy_diagnosis_container_starts_total{action=\"created\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("deploy_diagnosis_container_starts_total{action=\"started\"} 1"),
        "{metrics}"
    );
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["runner"]["detail"]["containerState"], "running");

    // A service started with other container settings (here the MCP port) replaces the
    // container; one started with the same settings keeps it.
    drop(app);
    let changed = DockerOptions {
        mcp_port: free_port(),
        ..opts
    };
    for (prefix, recreated) in [("dk4", true), ("dk5", false)] {
        let (before, _) = container_id(&docker, &name).await;
        let app = spawn_app(Options {
            docker: Some(changed.clone()),
            ..Options::default()
        })
        .await;
        assert_eq!(diagnose(&app, prefix).await["status"], "completed");
        let (after, running) = container_id(&docker, &name).await;
        assert!(running);
        assert_eq!(after != before, recreated, "{prefix}: {before} -> {after}");
    }
    remove(&docker, &name).await;
}

#[tokio::test]
async fn a_docker_diagnosis_past_its_deadline_leaves_no_runner_in_the_container() {
    let docker = docker().await;
    let opts = DockerOptions::unique("deadline");
    let name = opts.container.clone();
    remove(&docker, &name).await;
    let app = spawn_app(Options {
        docker: Some(opts),
        script: Script::ToolLoop,
        llm_delay: Duration::from_millis(1500),
        timeout_s: 3,
        max_turns: 50,
        ..Options::default()
    })
    .await;
    let id = deployment_id("dkdeadline");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    let runner_processes = |top: bollard::models::ContainerTopResponse| {
        top.processes
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.join(" "))
            .filter(|p| p.contains("diagnosis_runner"))
            .count()
    };
    let start = Instant::now();
    loop {
        let top = docker.top_processes(&name, None::<TopOptions>).await;
        if top.map(runner_processes).unwrap_or(0) > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the runner never ran in the container"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // While it runs: no secret and no prompt in the exec's argv (`docker inspect` shows it).
    let argvs = exec_argvs(&docker, &name).await;
    assert!(
        argvs.iter().any(|a| a.contains("diagnosis_runner.py")),
        "{argvs:?}"
    );
    assert!(
        argvs
            .iter()
            .all(|a| !a.contains(&app.api_key) && !a.contains("DevOps")),
        "{argvs:?}"
    );

    let report = app.wait_final(&id).await;

    assert_eq!(report["status"], "failed");
    assert!(
        report_error(&report).contains("deadline exceeded"),
        "{report:#}"
    );
    let top = docker
        .top_processes(&name, None::<TopOptions>)
        .await
        .unwrap();
    assert_eq!(
        runner_processes(top.clone()),
        0,
        "runner left in the container: {top:?}"
    );
    remove(&docker, &name).await;
}

#[tokio::test]
async fn a_missing_image_fails_the_report_saying_how_to_build_it() {
    let docker = docker().await;
    let mut opts = DockerOptions::unique("noimage");
    opts.image = "dd-no-such-image:never".into();
    let name = opts.container.clone();
    let app = spawn_app(Options {
        docker: Some(opts),
        ..Options::default()
    })
    .await;

    let report = diagnose(&app, "dknoimage").await;

    assert_eq!(report["status"], "failed");
    let error = report_error(&report);
    assert!(
        error.contains("dd-no-such-image:never") && error.contains("docker/build.sh"),
        "{error}"
    );
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready["runner"]["error"]
            .as_str()
            .unwrap()
            .contains("docker/build.sh"),
        "{ready}"
    );
    remove(&docker, &name).await;
}

/// Runs `python -c code` in the container as its user; what it prints.
async fn run_inside(docker: &Docker, name: &str, code: &str) -> String {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    use futures_util::StreamExt;
    let exec = docker
        .create_exec(
            name,
            CreateExecOptions::<String> {
                cmd: Some(vec![
                    "/opt/venv/bin/python".into(),
                    "-c".into(),
                    code.into(),
                ]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut text = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, None).await.unwrap()
    {
        while let Some(Ok(chunk)) = output.next().await {
            text.push_str(&chunk.to_string());
        }
    }
    text
}

#[tokio::test]
async fn on_its_own_network_the_container_reaches_no_loopback_service_of_the_host() {
    let docker = docker().await;
    let opts = DockerOptions {
        network: "bridge",
        ..DockerOptions::unique("bridge")
    };
    let (name, mcp_port) = (opts.container.clone(), opts.mcp_port);
    let app = spawn_app(Options {
        docker: Some(opts),
        ..Options::default()
    })
    .await;
    // Created at startup, as the design does (the service starts in the background).
    let start = Instant::now();
    let info = loop {
        match docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) if info.state.as_ref().and_then(|s| s.running) == Some(true) => break info,
            _ => assert!(
                start.elapsed() < Duration::from_secs(60),
                "the container was not started"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let host = info.host_config.unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("bridge"));
    assert_eq!(
        host.extra_hosts,
        Some(vec!["host.docker.internal:host-gateway".to_owned()])
    );
    let config = info.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("10001:10001"));
    let prom_port = app.prom.url.rsplit(':').next().unwrap();
    assert!(
        config.env.unwrap_or_default().contains(&format!(
            "PROMETHEUS_URL=http://host.docker.internal:{prom_port}"
        )),
        "the loopback Prometheus is the host's, as the container names it"
    );

    // Its MCP server listens on the container's loopback, not the host's; the service's
    // loopback-only port is not the container's to reach.
    let service_port = app.address.rsplit(':').next().unwrap();
    let probe = |port: &str| {
        format!(
            "import socket, time\n\
             end = time.time() + 20\n\
             while True:\n\
             \x20   try:\n\
             \x20       socket.create_connection(('127.0.0.1', {port}), 1).close(); print('open'); break\n\
             \x20   except OSError as e:\n\
             \x20       if time.time() > end: print('closed', e); break\n\
             \x20       time.sleep(0.2)\n"
        )
    };
    let mcp = run_inside(&docker, &name, &probe(&mcp_port.to_string())).await;
    assert!(mcp.starts_with("open"), "the MCP server inside: {mcp}");
    let service = run_inside(
        &docker,
        &name,
        &format!(
            "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {service_port}), 2).close(); print('open')\nexcept OSError as e:\n    print('closed', e)\n"
        ),
    )
    .await;
    assert!(
        service.starts_with("closed"),
        "the host's loopback service from inside: {service}"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", mcp_port))
            .await
            .is_err(),
        "the MCP server is not on the host's loopback"
    );
    remove(&docker, &name).await;
}
