//! One diagnosis against a real model served here: Qwen2.5-Coder 0.5B through llama.cpp's
//! server (`scripts/local-llm`), the native runner, the real Prometheus and its MCP server,
//! with the request each step really sends (the tools, `tool_choice`, the report's JSON
//! schema on a step that must answer). A change in the runtime, the weights or the prompt
//! that the server refuses, or that leaves the model without an answer, fails here. The
//! 0.5B model is small: what it writes is judged as any model's is, and either becomes the
//! report or is named as the reason the evidence wrote it.

use crate::fake_llm::Provider;
use crate::helpers::{alertmanager_body, deployment_id, spawn_app, Options};
use crate::servers;

#[tokio::test]
async fn one_diagnosis_against_the_real_local_model() {
    // The model takes one core (`servers::local_llm`), 80 s alone, at `nice -5` ahead of
    // the tests beside it: its requests get 450 s. It does not take the CPU-heavy turn,
    // which is for the tests that load both cores.
    let llm = servers::local_llm().await;
    let app = spawn_app(Options {
        native: true,
        evidence: true,
        ai_base_url: Some(llm.url.clone()),
        provider: Some(Provider::LlamaCpp),
        model: "qwen2.5-coder-0.5b",
        timeout_s: 450,
        max_turns: 1,
        ai_extra:
            "  ContextTokens: 8192\n  MaxTokens: 300\n  ExtraBody: {temperature: 0, seed: 7}\n",
        ..Options::default()
    })
    .await;
    let id = deployment_id("live");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    let report = app
        .wait_final_within(&id, std::time::Duration::from_secs(960))
        .await;

    // For the person reading the run (`--nocapture`): what the on-call would read.
    eprintln!(
        "engine {} aiError {}\npromQL {}\n{}",
        report["engine"],
        report["aiError"],
        report["promQL"],
        report["content"].as_str().unwrap_or_default()
    );
    assert_eq!(report["status"], "completed", "{report:#}");
    match report["engine"].as_str() {
        Some("ai") => {
            let content = report["content"].as_str().unwrap();
            for section in deploy_diagnosis::runner::extract::SECTIONS {
                assert!(content.contains(section), "{content}");
            }
        }
        Some("evidence") => {
            // The model answered, and what it wrote is the reason (its shape, or its length
            // past AI.MaxTokens twice): not the server refusing a request, not a timeout,
            // not the context.
            let why = report["aiError"].as_str().unwrap_or_default();
            assert!(
                why.starts_with("the model's answer")
                    || why.starts_with("answer cut off at AI.MaxTokens (300), also when asked"),
                "{report:#}"
            );
        }
        other => panic!("engine {other:?}: {report:#}"),
    }
}
