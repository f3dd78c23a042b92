//! One contract, run against both real stores: the embedded SQLite file and MongoDB (via
//! SecantusDB, a MongoDB wire-protocol server).

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use deploy_diagnosis::model::alert::{Alert, DeploymentId};
use deploy_diagnosis::model::budget::{Caps, Exhausted};
use deploy_diagnosis::model::changes::{ChangedFile, Changes, PullRequest};
use deploy_diagnosis::model::deployment::{
    Deployment, Host, HostStatus, RedQueries, RollbackPolicy, Strategy, Thresholds,
};
use deploy_diagnosis::model::evidence::{
    EvidenceItem, Gathered, Reading, Resource, Scored, Unmeasured,
};
use deploy_diagnosis::model::notify::{DeliveryState, Event, Notification};
use deploy_diagnosis::model::report::{
    Ending, Engine, Feedback, Finish, Related, RelatedAlert, Report, ReportBody, ReportState,
    ReportStatus, RunnerKind, Usage, MAX_RELATED_ALERTS,
};
use deploy_diagnosis::model::verdict::{
    Attribution, Class, Comparison, Method, Recommendation, ReleaseVerdict, Test,
};
use deploy_diagnosis::store::embedded::EmbeddedStore;
use deploy_diagnosis::store::mongo::MongoStore;
use deploy_diagnosis::store::{
    BudgetStore, Cursor, DeploymentStore, Diagnosis, Insert, Lease, LeaseQueue, ListFilter, Page,
    QueueKind, Rediagnose, ReportStore, Restart, Settled, StoreError, Stores, Upsert,
};
use futures_util::TryStreamExt;

use crate::servers::mongo;

fn id(s: &str) -> DeploymentId {
    DeploymentId::parse(s).unwrap()
}

/// The lease `owner` holds on `name`'s report (a diagnosis's or a delivery's: their
/// version is not part of the lease).
fn held(name: &str, owner: &str) -> Lease {
    Lease {
        deployment_id: id(name),
        version: 0,
        owner: owner.into(),
    }
}

/// Version `version` of `name`'s report, as whoever gathered its evidence completes it.
fn version(name: &str, version: u32) -> Lease {
    Lease {
        deployment_id: id(name),
        version,
        owner: "g".into(),
    }
}

/// Evidence and a verdict, as a gathering settles them.
fn settled(evidence: Result<&Gathered, &str>, release: Option<&ReleaseVerdict>) -> Settled {
    Settled {
        evidence: evidence.cloned().map_err(str::to_owned),
        release: release.cloned(),
    }
}

fn report(name: &str, minute: u32) -> Report {
    let mut alert = Alert {
        status: "firing".into(),
        alertname: "X".into(),
        ..Default::default()
    };
    alert.labels.insert("deploymentId".into(), name.into());
    Report::new(
        id(name),
        alert,
        Utc.with_ymd_and_hms(2026, 11, 25, 10, minute, 0).unwrap(),
    )
}

fn finish(status: ReportStatus, minute: u32) -> Finish {
    Finish {
        ending: match status {
            ReportStatus::Completed => Ending::Completed {
                body: ReportBody {
                    prom_ql: vec!["up".into()],
                    content: "c".into(),
                },
                engine: Engine::Evidence,
                ai_error: Some("AI call failed with status 500".into()),
            },
            _ => Ending::Failed {
                error: "boom".into(),
            },
        },
        raw_output: None,
        runner: Some(RunnerKind::Process),
        now: Utc.with_ymd_and_hms(2026, 11, 25, 11, minute, 0).unwrap(),
        duration_ms: 1234,
        usage: Some(Usage {
            input_tokens: 10,
            output_tokens: 5,
            steps: 2,
            tool_calls: 1,
            cached_tool_calls: 0,
            ..Default::default()
        }),
        // A failed diagnosis still carries the release verdict it used.
        release: (status == ReportStatus::Failed)
            .then(|| release_verdict(Attribution::Inconclusive)),
        notify: Vec::new(),
    }
}

/// A person's re-diagnosis, with the default history.
fn restart() -> Restart {
    Restart {
        max_history: 20,
        failed_before: None,
        deployment: None,
    }
}

/// Items as a gathering stores them, with no host left out.
fn gathered(items: Vec<EvidenceItem>) -> Gathered {
    Gathered {
        items,
        unmeasured: None,
    }
}

fn evidence() -> Vec<EvidenceItem> {
    vec![EvidenceItem {
        resource: Resource::Cpu,
        signal: "CPU busy %".into(),
        instance: "web-1:9100".into(),
        query: "100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode=\"idle\"}[1m])))"
            .into(),
        unit: "%".into(),
        scored: Scored {
            baseline: Some(12.5),
            baseline_p95: None,
            incident: 97.25,
            change: None,
            peak: 100.0,
            last: 99.5,
            score: 6.08,
            verdict: Reading::Saturated,
        },
        pre_existing: false,
        no_baseline: false,
        series_start: None,
    }]
}

/// A release verdict as the judge writes one.
fn release_verdict(verdict: Attribution) -> ReleaseVerdict {
    ReleaseVerdict {
        verdict,
        recommendation: Recommendation::Hold,
        confidence: 0.7,
        reasons: vec!["web-1 errors %: 30% against 0% on the controls".into()],
        comparisons: vec![Comparison {
            signal: "errors %".into(),
            host: "web-1".into(),
            released_host: true,
            method: Method::Canary,
            query: "errors{hostname=~\"web-1\"}".into(),
            unit: "%".into(),
            released: 30.0,
            control: 0.0,
            points: [20, 40],
            p_value: 1e-6,
            effect: 12.5,
            class: Class::High,
            worse: true,
            red: true,
            breaks: Some("errorRateMaxPercent 5".into()),
            pre_existing: false,
            test: Test::Proportions,
            p_adjusted: Some(2e-6),
            shift: Some(30.0),
            p90: None,
            requests: Some([190, 380]),
            failed: Some([57, 0]),
            change_at: Some(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
            changed_before: false,
            early_gains: Vec::new(),
        }],
        model: None,
    }
}

async fn contract(s: Stores) {
    let store = Arc::clone(&s.reports);
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrations run twice");
    store.ping().await.unwrap();

    // Insert is unique per deployment and says what exists.
    let a = report("dep-a", 1);
    assert_eq!(store.insert(&a).await.unwrap(), Insert::Inserted);
    assert_eq!(
        store.insert(&report("dep-a", 2)).await.unwrap(),
        Insert::Exists(ReportStatus::Generating)
    );
    assert_eq!(
        store.insert(&report("dep-b", 2)).await.unwrap(),
        Insert::Inserted
    );
    assert_eq!(
        store.insert(&report("dep-c", 3)).await.unwrap(),
        Insert::Inserted
    );
    let got = store.get(&id("dep-a")).await.unwrap().unwrap();
    assert_eq!(got, a, "round trip keeps every field");
    assert!(store.get(&id("nope")).await.unwrap().is_none());

    // Evidence is stored on the generating version it was gathered for.
    assert!(got.evidence.is_none());
    let facts = evidence();
    let left_out = Unmeasured::of(vec!["web-21:9100".into(), "web-22:9100".into()], 20);
    let with_left_out = Gathered {
        items: facts.clone(),
        unmeasured: left_out.clone(),
    };
    assert!(s
        .gatherings
        .complete(&version("dep-c", 1), &settled(Ok(&with_left_out), None))
        .await
        .unwrap());
    assert!(
        !s.gatherings
            .complete(
                &version("dep-c", 2),
                &settled(Ok(&gathered(facts.clone())), None)
            )
            .await
            .unwrap(),
        "another version"
    );
    let c = store.get(&id("dep-c")).await.unwrap().unwrap();
    assert_eq!(
        (c.evidence, c.unmeasured),
        (Some(facts.clone()), left_out),
        "the hosts left out are kept with the items"
    );

    // Claims take the oldest free report, one owner at a time.
    let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
    assert_eq!(store.queue_depth(now).await.unwrap(), 3);
    let c1 = s
        .diagnoses
        .claim("w1", now, now + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c1.deployment_id.as_str(), c1.attempts), ("dep-a", 1));
    assert_eq!(c1.lease_owner.as_deref(), Some("w1"));
    let c2 = s
        .diagnoses
        .claim("w2", now, now + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c2.deployment_id.as_str(), "dep-b");
    assert_eq!(store.queue_depth(now).await.unwrap(), 1);

    // A lease that runs out lets another worker take the report (a dead worker's report).
    assert!(s
        .diagnoses
        .renew(&held("dep-a", "w1"), now + Duration::seconds(60))
        .await
        .unwrap());
    assert!(!s
        .diagnoses
        .renew(&held("dep-a", "w2"), now + Duration::seconds(60))
        .await
        .unwrap());
    let later = now + Duration::seconds(61);
    let c3 = s
        .diagnoses
        .claim("w3", later, later + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        c3.deployment_id.as_str(),
        "dep-a",
        "oldest by updatedTime, lease expired"
    );
    assert_eq!(c3.attempts, 2);
    assert!(
        !s.diagnoses
            .complete(&held("dep-a", "w1"), &finish(ReportStatus::Completed, 1))
            .await
            .unwrap(),
        "w1 lost it"
    );
    assert!(s
        .gatherings
        .complete(
            &version("dep-a", 1),
            &settled(Ok(&gathered(facts.clone())), None)
        )
        .await
        .unwrap());
    assert!(s
        .diagnoses
        .complete(&held("dep-a", "w3"), &finish(ReportStatus::Completed, 1))
        .await
        .unwrap());
    assert!(
        !s.gatherings
            .complete(
                &version("dep-a", 1),
                &settled(Ok(&Gathered::default()), None)
            )
            .await
            .unwrap(),
        "a finished report keeps its evidence"
    );
    let done = store.get(&id("dep-a")).await.unwrap().unwrap();
    assert_eq!(done.status(), ReportStatus::Completed);
    assert_eq!(done.duration_ms, Some(1234));
    assert_eq!(
        done.usage.as_ref().map(|u| (u.input_tokens, u.steps)),
        Some((10, 2))
    );
    assert!(done.lease_owner.is_none());
    assert_eq!(
        (done.engine(), done.ai_error()),
        (
            Some(Engine::Evidence),
            Some("AI call failed with status 500")
        )
    );
    assert_eq!(done.body().unwrap().prom_ql, vec!["up"]);

    // Release gives a claim back at once, and the attempt with it (a shutdown is not an
    // attempt: restarts alone never make a report "give up").
    let before = store.get(&id("dep-b")).await.unwrap().unwrap().attempts;
    assert!(s.diagnoses.release(&held("dep-b", "w2")).await.unwrap());
    let c4 = s
        .diagnoses
        .claim("w4", now, now + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c4.deployment_id.as_str(), "dep-b");
    assert_eq!(
        c4.attempts, before,
        "released, then claimed again: the same count"
    );
    assert!(s
        .diagnoses
        .complete(&held("dep-b", "w4"), &finish(ReportStatus::Failed, 2))
        .await
        .unwrap());

    // Counts.
    let counts = store.count_by_status().await.unwrap();
    assert_eq!(counts.get(&ReportStatus::Completed), Some(&1));
    assert_eq!(counts.get(&ReportStatus::Failed), Some(&1));
    assert_eq!(counts.get(&ReportStatus::Generating), Some(&1));

    // Listing: newest first, by status, before a time.
    let page = |limit: u32| Page {
        limit,
        ..Default::default()
    };
    let all = store
        .list(&ListFilter {
            page: page(10),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<_> = all.iter().map(|r| r.deployment_id.as_str()).collect();
    assert_eq!(names, vec!["dep-c", "dep-b", "dep-a"]);
    let failed = store
        .list(&ListFilter {
            status: Some(ReportStatus::Failed),
            page: page(10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].release.as_ref().map(|r| r.verdict),
        Some(Attribution::Inconclusive),
        "finish writes the verdict"
    );
    let older = store
        .list(&ListFilter {
            page: Page {
                before: Some(all[0].created_time),
                ..page(1)
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(older[0].deployment_id.as_str(), "dep-b");

    // Reports created in the same millisecond: a cursor pages through each exactly once.
    for n in 0..5 {
        store
            .insert(&report(&format!("same-{n}"), 30))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let got = store
            .list(&ListFilter {
                page: Page {
                    after: after.clone(),
                    ..page(2)
                },
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = got.last() else { break };
        after = Some(Cursor {
            created_time: last.created_time,
            key: last.id.clone(),
        });
        seen.extend(got.iter().map(|r| r.deployment_id.to_string()));
    }
    let mut same: Vec<&String> = seen.iter().filter(|s| s.starts_with("same-")).collect();
    assert_eq!(same.len(), 5, "{seen:?}");
    same.dedup();
    assert_eq!(same.len(), 5, "none twice: {seen:?}");
    assert_eq!(seen.len(), 8, "{seen:?}");

    // Feedback goes on a finished version only; history keeps it.
    let rating = Feedback {
        score: 4,
        root_cause_correct: true,
        comment: "根因正确".into(),
        at: Utc.with_ymd_and_hms(2026, 11, 25, 13, 0, 0).unwrap(),
    };
    assert!(
        !store.set_feedback(&id("dep-c"), 1, &rating).await.unwrap(),
        "dep-c is generating"
    );
    assert!(!store.set_feedback(&id("dep-a"), 9, &rating).await.unwrap());
    assert!(store.set_feedback(&id("dep-a"), 1, &rating).await.unwrap());
    assert_eq!(
        store.get(&id("dep-a")).await.unwrap().unwrap().feedback,
        Some(rating.clone())
    );

    // Re-diagnosis keeps history, refuses while generating.
    assert_eq!(
        store
            .rediagnose(&id("dep-c"), now, restart())
            .await
            .unwrap(),
        Rediagnose::InProgress
    );
    assert_eq!(
        store.rediagnose(&id("nope"), now, restart()).await.unwrap(),
        Rediagnose::NotFound
    );
    let Rediagnose::Restarted { report: again, .. } = store
        .rediagnose(&id("dep-a"), now, restart())
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (again.status(), again.version, again.attempts),
        (ReportStatus::Generating, 2, 0)
    );
    assert!(again.body().is_none());
    assert!(again.evidence.is_none(), "a new version gathers anew");
    assert!(again.state == ReportState::Generating && again.feedback.is_none());
    assert_eq!(
        store
            .rediagnose(&id("dep-a"), now, restart())
            .await
            .unwrap(),
        Rediagnose::InProgress
    );
    let history = store.history(&id("dep-a")).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].version, history[0].status),
        (1, ReportStatus::Completed)
    );
    assert_eq!(history[0].body.as_ref(), done.body());
    assert_eq!(
        history[0].feedback,
        Some(rating),
        "history keeps the version's feedback"
    );

    // Delete takes history with it.
    assert!(store.delete(&id("dep-a")).await.unwrap());
    assert!(!store.delete(&id("dep-a")).await.unwrap());
    assert!(store.history(&id("dep-a")).await.unwrap().is_empty());
    assert!(store.get(&id("dep-a")).await.unwrap().is_none());
}

/// The evidence queue: oldest first, its own lease apart from the diagnosis lease, the first
/// gathering stored wins, a failure is recorded, a dead gathering's lease runs out.
async fn evidence_queue_contract(s: Stores) {
    let store = Arc::clone(&s.reports);
    store.migrate().await.unwrap();
    for (name, minute) in [("q-2", 2), ("q-1", 1), ("q-3", 3)] {
        assert_eq!(
            store.insert(&report(name, minute)).await.unwrap(),
            Insert::Inserted
        );
    }
    let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
    let lease = |t| t + Duration::seconds(15);
    let claim = |t| {
        let gatherings = Arc::clone(&s.gatherings);
        async move { gatherings.claim("g", t, lease(t)).await.unwrap() }
    };
    let e1 = claim(now).await.expect("q-1 waits for evidence");
    assert_eq!(e1.deployment_id.as_str(), "q-1", "the oldest first");
    assert_eq!(e1.evidence_until, Some(lease(now)));
    assert_eq!(claim(now).await.unwrap().deployment_id.as_str(), "q-2");

    // A worker that waits for settled evidence claims nothing while it is gathered.
    assert!(s
        .diagnoses
        .claim("w", now, now + Duration::seconds(30))
        .await
        .unwrap()
        .is_none());

    // The first gathering stored wins, and ends the lease.
    let facts = evidence();
    let verdict = release_verdict(Attribution::Release);
    assert!(s
        .gatherings
        .complete(
            &version("q-1", 1),
            &settled(Ok(&gathered(facts.clone())), Some(&verdict))
        )
        .await
        .unwrap());
    let other = release_verdict(Attribution::NotRelease);
    assert!(!s
        .gatherings
        .complete(&version("q-1", 1), &settled(Err("too late"), Some(&other)))
        .await
        .unwrap());
    let q1 = store.get(&id("q-1")).await.unwrap().unwrap();
    assert_eq!(
        (q1.evidence, q1.evidence_error, q1.evidence_until),
        (Some(facts), None, None)
    );
    // Settled: now a worker claims it, and it alone.
    let c = s
        .diagnoses
        .claim("w", now, now + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.deployment_id.as_str(), "q-1");
    assert!(s
        .diagnoses
        .claim("w", now, now + Duration::seconds(30))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        q1.release,
        Some(verdict),
        "the verdict is stored with the evidence"
    );
    let by_verdict = |v: Attribution| {
        let store = &store;
        async move {
            store
                .list(&ListFilter {
                    verdict: Some(v),
                    page: Page {
                        limit: 10,
                        ..Default::default()
                    },
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.deployment_id.to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(by_verdict(Attribution::Release).await, vec!["q-1"]);
    assert!(by_verdict(Attribution::NotRelease).await.is_empty());

    // A failed gathering is recorded and leaves the queue.
    assert!(s
        .gatherings
        .complete(
            &version("q-2", 1),
            &settled(Err("Prometheus at http://p: down"), None)
        )
        .await
        .unwrap());
    let q2 = store.get(&id("q-2")).await.unwrap().unwrap();
    assert_eq!(
        (q2.evidence, q2.evidence_error.as_deref()),
        (None, Some("Prometheus at http://p: down"))
    );

    // A failed gathering is settled too: a worker claims it.
    let c = s
        .diagnoses
        .claim("w2", now, now + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.deployment_id.as_str(), "q-2");
    // A gathering that died: its lease runs out and the report is claimed again; no
    // worker takes it meanwhile.
    assert_eq!(claim(now).await.unwrap().deployment_id.as_str(), "q-3");
    assert!(claim(now).await.is_none());
    let later = now + Duration::seconds(16);
    assert!(s
        .diagnoses
        .claim("w3", later, later + Duration::seconds(30))
        .await
        .unwrap()
        .is_none());
    assert_eq!(claim(later).await.unwrap().deployment_id.as_str(), "q-3");

    // A re-diagnosis gathers anew: the new version is queued again, first (the oldest).
    assert!(s
        .diagnoses
        .complete(&held("q-1", "w"), &finish(ReportStatus::Failed, 1))
        .await
        .unwrap());
    let Rediagnose::Restarted { report: again, .. } = store
        .rediagnose(&id("q-1"), later, restart())
        .await
        .unwrap()
    else {
        panic!("q-1 is failed")
    };
    assert!(again.needs_evidence());
    let e = claim(later).await.unwrap();
    assert_eq!((e.deployment_id.as_str(), e.version), ("q-1", 2));
    assert!(
        !s.gatherings
            .complete(
                &version("q-1", 1),
                &settled(Ok(&gathered(evidence())), None)
            )
            .await
            .unwrap(),
        "the old version's gathering is not stored on the new one"
    );
}

/// What every lease queue promises, for `name`'s report, the one ready in `queue` at `now`:
/// a claim is held by its owner alone (another owner's renew and release change nothing),
/// a renewed lease outlives its first end, a released item is claimable at once, and one
/// whose lease ran out is claimable again, by another owner. Returns the last claim's
/// lease, held until `now` + 90 s.
async fn lease_contract<K: QueueKind>(
    queue: &dyn LeaseQueue<K>,
    name: &str,
    now: chrono::DateTime<Utc>,
) -> Lease {
    let until = now + Duration::seconds(30);
    let claimed = queue.claim("a", now, until).await.unwrap().expect("ready");
    assert_eq!(claimed.deployment_id, id(name));
    assert!(
        queue.claim("b", now, until).await.unwrap().is_none(),
        "held"
    );
    let (mine, theirs) = (Lease::of(&claimed, "a"), Lease::of(&claimed, "b"));
    assert!(!queue
        .renew(&theirs, now + Duration::seconds(60))
        .await
        .unwrap());
    assert!(queue
        .renew(&mine, now + Duration::seconds(60))
        .await
        .unwrap());
    let past_first_end = until + Duration::seconds(1);
    assert!(
        queue
            .claim("b", past_first_end, past_first_end + Duration::seconds(30))
            .await
            .unwrap()
            .is_none(),
        "renewed: still held past the first lease's end"
    );
    assert!(!queue.release(&theirs).await.unwrap());
    assert!(queue.release(&mine).await.unwrap());
    assert!(!queue.release(&mine).await.unwrap(), "given back once");
    let again = queue.claim("b", now, until).await.unwrap();
    assert_eq!(
        again.map(|r| r.deployment_id),
        Some(id(name)),
        "claimable at once"
    );
    let late = until + Duration::seconds(1);
    let expired = queue
        .claim("c", late, now + Duration::seconds(90))
        .await
        .unwrap();
    assert_eq!(
        expired.map(|r| r.deployment_id),
        Some(id(name)),
        "claimable again once the lease ran out"
    );
    assert!(
        !queue
            .renew(&Lease::of(&claimed, "b"), now + Duration::seconds(90))
            .await
            .unwrap(),
        "the lease that ran out is no longer held"
    );
    Lease::of(&claimed, "c")
}

/// The three queues, one after the other on one report: its evidence is gathered, then it
/// is diagnosed, then its notification delivered; each meets [`lease_contract`].
async fn queues_contract(s: Stores) {
    s.reports.migrate().await.unwrap();
    let now = Utc::now();
    s.reports.insert(&report("lq-1", 1)).await.unwrap();

    let gathering = lease_contract(s.gatherings.as_ref(), "lq-1", now).await;
    assert!(s
        .gatherings
        .complete(&gathering, &settled(Ok(&gathered(evidence())), None))
        .await
        .unwrap());
    assert!(
        s.gatherings.claim("d", now, now).await.unwrap().is_none(),
        "settled"
    );

    let diagnosis = lease_contract(s.diagnoses.as_ref(), "lq-1", now).await;
    let report = s.reports.get(&id("lq-1")).await.unwrap().unwrap();
    assert_eq!(
        report.attempts, 2,
        "the released claim's attempt was given back"
    );
    let mut ending = finish(ReportStatus::Completed, 5);
    ending.notify = vec![Notification::new(
        &report.id,
        1,
        "ops",
        Event::Completed,
        now,
    )];
    assert!(s.diagnoses.complete(&diagnosis, &ending).await.unwrap());
    assert!(
        s.diagnoses.claim("d", now, now).await.unwrap().is_none(),
        "completed"
    );

    let delivery = lease_contract(s.outbox.as_ref(), "lq-1", now).await;
    let mut sent = ending.notify[0].clone();
    sent.state = DeliveryState::Delivered;
    sent.delivered_at = Some(now);
    assert!(s.outbox.complete(&delivery, &[sent]).await.unwrap());
    let later = now + Duration::seconds(120);
    assert!(
        s.outbox.claim("d", later, later).await.unwrap().is_none(),
        "delivered"
    );
}

/// What a report keeps as it is diagnosed again and again: at most `max_history` versions
/// in history (the oldest dropped, and said how many), and a failed report diagnosed again
/// by a new alert no sooner than the policy allows.
async fn growth_contract(s: Stores) {
    let store = Arc::clone(&s.reports);
    store.migrate().await.unwrap();
    assert_eq!(
        store.insert(&report("g-1", 1)).await.unwrap(),
        Insert::Inserted
    );
    let keep_two = Restart {
        max_history: 2,
        ..restart()
    };
    let mut dropped = 0;
    for version in 1..=5 {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, version, 0).unwrap();
        let claimed = s
            .diagnoses
            .claim("w", now, now + Duration::seconds(30))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.version, version);
        assert!(s
            .diagnoses
            .complete(&held("g-1", "w"), &finish(ReportStatus::Failed, version))
            .await
            .unwrap());
        let Rediagnose::Restarted { dropped: d, .. } = store
            .rediagnose(&id("g-1"), now, keep_two.clone())
            .await
            .unwrap()
        else {
            panic!("version {version} is failed")
        };
        dropped += d;
    }
    let versions: Vec<u32> = store
        .history(&id("g-1"))
        .await
        .unwrap()
        .iter()
        .map(|h| h.version)
        .collect();
    assert_eq!(versions, vec![5, 4], "the newest two");
    assert_eq!(dropped, 3, "each dropped version counted once");

    // Version 6 fails at 11:06: a new alert's re-run waits until the policy's time.
    let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 30, 0).unwrap();
    s.diagnoses
        .claim("w", now, now + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert!(s
        .diagnoses
        .complete(&held("g-1", "w"), &finish(ReportStatus::Failed, 6))
        .await
        .unwrap());
    let failed_at = Utc.with_ymd_and_hms(2026, 11, 25, 11, 6, 0).unwrap();
    let too_soon = Restart {
        failed_before: Some(failed_at - Duration::seconds(1)),
        ..keep_two.clone()
    };
    assert_eq!(
        store.rediagnose(&id("g-1"), now, too_soon).await.unwrap(),
        Rediagnose::TooSoon(failed_at)
    );
    assert_eq!(
        store.get(&id("g-1")).await.unwrap().unwrap().version,
        6,
        "nothing changed"
    );
    let in_time = Restart {
        failed_before: Some(failed_at + Duration::seconds(1)),
        ..keep_two
    };
    assert!(matches!(
        store.rediagnose(&id("g-1"), now, in_time).await.unwrap(),
        Rediagnose::Restarted { .. }
    ));
}

/// The AI budgets: one ledger for every handle on the store.
/// The outbox: a finish adds its notifications in the same write; a due one is claimed
/// under a delivery lease (nobody else gets it meanwhile); a delivery's updates are merged
/// by id, keeping what a newer version added; a re-diagnosis keeps the outbox.
async fn outbox_contract(s: Stores) {
    let store = Arc::clone(&s.reports);
    store.migrate().await.unwrap();
    let now = Utc::now();
    let lease = |t: chrono::DateTime<Utc>| t + Duration::seconds(15);
    let r = report("out-1", 1);
    store.insert(&r).await.unwrap();
    assert!(s
        .outbox
        .claim("o", now, lease(now))
        .await
        .unwrap()
        .is_none());
    let claimed = s
        .diagnoses
        .claim("w1", now, now + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    let first = Notification::new(&claimed.id, 1, "ops", Event::Completed, now);
    let mut ending = finish(ReportStatus::Completed, 5);
    ending.notify = vec![first.clone()];
    assert!(s
        .diagnoses
        .complete(&held("out-1", "w1"), &ending)
        .await
        .unwrap());
    let stored = store.get(&id("out-1")).await.unwrap().unwrap();
    assert_eq!(
        stored.notifications,
        vec![first.clone()],
        "written with the finish"
    );

    // Claimed once while its lease lives; then again after it ran out.
    let got = s.outbox.claim("o", now, lease(now)).await.unwrap().unwrap();
    assert_eq!(got.deployment_id.as_str(), "out-1");
    assert!(s
        .outbox
        .claim("o", now, lease(now))
        .await
        .unwrap()
        .is_none());
    let later = now + Duration::seconds(20);
    assert!(s
        .outbox
        .claim("o", later, lease(later))
        .await
        .unwrap()
        .is_some());

    // A failed attempt: due again later, not before.
    let mut retry = first.clone();
    retry.attempts = 1;
    retry.last_error = Some("the receiver answered 500".into());
    retry.next_at = now + Duration::seconds(60);
    assert!(s
        .outbox
        .complete(&held("out-1", "o"), &[retry.clone()])
        .await
        .unwrap());
    assert!(
        s.outbox
            .claim("o", now, lease(now))
            .await
            .unwrap()
            .is_none(),
        "not due yet"
    );

    // A re-diagnosis keeps the outbox, the earlier version's pending message given up
    // (the new version's ending is sent instead); its ending adds to it.
    let Rediagnose::Restarted { .. } = store
        .rediagnose(&id("out-1"), now, restart())
        .await
        .unwrap()
    else {
        panic!("not restarted");
    };
    let mut superseded = retry.clone();
    superseded.state = DeliveryState::Failed;
    superseded.last_error =
        Some("superseded: version 1 was re-diagnosed before this was delivered".into());
    assert_eq!(
        store
            .get(&id("out-1"))
            .await
            .unwrap()
            .unwrap()
            .notifications,
        vec![superseded.clone()]
    );
    let claimed = s
        .diagnoses
        .claim("w2", now, now + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    let second = Notification::new(&claimed.id, 2, "ops", Event::Failed, now);
    let mut ending = finish(ReportStatus::Failed, 6);
    ending.notify = vec![second.clone()];
    assert!(s
        .diagnoses
        .complete(&held("out-1", "w2"), &ending)
        .await
        .unwrap());
    let got = s.outbox.claim("o", now, lease(now)).await.unwrap().unwrap();
    assert_eq!(got.notifications, vec![superseded.clone(), second.clone()]);

    // A delivery that read only the first writes it back without losing the second.
    let mut delivered = retry.clone();
    delivered.state = DeliveryState::Delivered;
    delivered.attempts = 2;
    assert!(s
        .outbox
        .complete(&held("out-1", "o"), &[delivered.clone()])
        .await
        .unwrap());
    let stored = store.get(&id("out-1")).await.unwrap().unwrap();
    assert_eq!(
        stored.notifications,
        vec![delivered.clone(), second.clone()]
    );
    let mut done = second.clone();
    done.state = DeliveryState::Delivered;
    assert!(s
        .outbox
        .complete(&held("out-1", "o"), &[done])
        .await
        .unwrap());
    let far = now + Duration::hours(1);
    assert!(
        s.outbox
            .claim("o", far, lease(far))
            .await
            .unwrap()
            .is_none(),
        "nothing left to deliver"
    );
    assert!(!s.outbox.complete(&held("nope", "o"), &[]).await.unwrap());
}

async fn budget_contract<S: ReportStore + BudgetStore>(store: &S, other: &S) {
    store.migrate().await.unwrap();
    let caps = Caps {
        diagnoses_per_hour: 2,
        tokens_per_day: 1000,
    };
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    assert_eq!(store.admit_ai(now, caps).await.unwrap(), Ok(()));
    assert_eq!(other.admit_ai(now, caps).await.unwrap(), Ok(()));
    assert_eq!(
        store.admit_ai(now, caps).await.unwrap(),
        Err(Exhausted::DiagnosesPerHour(2)),
        "two handles, one budget"
    );
    let later = now + Duration::minutes(61);
    assert_eq!(other.admit_ai(later, caps).await.unwrap(), Ok(()));
    store.spend_ai(later, 1200).await.unwrap();
    assert_eq!(
        other.admit_ai(later, caps).await.unwrap(),
        Err(Exhausted::TokensPerDay(1000))
    );
    // Taken at once from both: never more than the cap.
    let fresh = later + Duration::days(2);
    let all = futures_util::future::join_all((0..6).map(|n| async move {
        let handle = if n % 2 == 0 { store } else { other };
        handle.admit_ai(fresh, caps).await.unwrap()
    }))
    .await;
    assert_eq!(all.iter().filter(|r| r.is_ok()).count(), 2, "{all:?}");
}

fn deployment(name: &str, minute: u32, hosts: &[&str]) -> Deployment {
    let at = Utc.with_ymd_and_hms(2026, 11, 25, 9, minute, 0).unwrap();
    Deployment {
        deployment_id: id(name),
        service: "shop".into(),
        repo_address: "acme/shop".into(),
        tag: format!("v1.{minute}.0"),
        previous_tag: "v1.0.0".into(),
        commit: "abc123".into(),
        hosts: hosts.iter().map(|h| Host::released(*h)).collect(),
        strategy: Strategy::All,
        environment: "production".into(),
        started_at: at,
        finished_at: None,
        red: None,
        thresholds: None,
        url: "https://ci.example.com/run/1".into(),
        rollback_policy: None,
        created_time: at,
        updated_time: at,
    }
}

/// A rollback policy with a signing secret.
fn policy() -> RollbackPolicy {
    RollbackPolicy {
        auto_rollback: true,
        url: "https://deploy.example.com/rollback".into(),
        secret: "whsec_c2VjcmV0LWtleS1mb3Itcm9sbGJhY2s=".into(),
        signed: true,
    }
}

/// The deployments registry, and each report version's deployment snapshot and changes.
async fn deployments_contract<S: ReportStore + DeploymentStore + LeaseQueue<Diagnosis>>(store: &S) {
    store.migrate().await.unwrap();
    let d1 = deployment("dep-1", 0, &["web-1:9100", "web-2"]);
    assert_eq!(store.put_deployment(&d1).await.unwrap(), Upsert::Created);
    assert_eq!(
        store.get_deployment(&id("dep-1")).await.unwrap(),
        Some(d1.clone())
    );
    // Registered again: fields replaced, the first createdTime kept.
    let mut again = deployment("dep-1", 5, &["web-3"]);
    again.created_time = again.started_at;
    assert_eq!(store.put_deployment(&again).await.unwrap(), Upsert::Updated);
    let got = store.get_deployment(&id("dep-1")).await.unwrap().unwrap();
    assert_eq!(got.host_names(), vec!["web-3"]);
    assert_eq!(got.tag, "v1.5.0");
    assert_eq!(
        got.created_time, d1.created_time,
        "first registration's time stays"
    );
    store.put_deployment(&d1).await.unwrap();

    // A rollout round-trips: hosts with their status, strategy, times, RED and thresholds.
    let mut rollout = deployment("dep-r", 20, &["web-8"]);
    rollout.hosts.push(Host {
        name: "web-9".into(),
        status: HostStatus::Pending,
        released_at: None,
    });
    rollout.hosts[0].released_at = Some(rollout.started_at + Duration::minutes(2));
    rollout.strategy = Strategy::Canary;
    rollout.finished_at = Some(rollout.started_at + Duration::minutes(30));
    rollout.red = Some(RedQueries {
        rate: "sum(rate(http_requests_total{hostname=~{{hostname}}}[1m]))".into(),
        ..Default::default()
    });
    rollout.thresholds = Some(Thresholds {
        error_rate_max_percent: Some(1.0),
        ..Default::default()
    });
    rollout.rollback_policy = Some(policy());
    store.put_deployment(&rollout).await.unwrap();
    assert_eq!(
        store.get_deployment(&id("dep-r")).await.unwrap(),
        Some(rollout.clone())
    );
    assert!(store.delete_deployment(&id("dep-r")).await.unwrap());

    let d2 = deployment("dep-2", 30, &["WEB-2"]);
    let d3 = deployment("dep-3", 40, &["db-1"]);
    store.put_deployment(&d2).await.unwrap();
    store.put_deployment(&d3).await.unwrap();

    // Listing: newest registration first, paged by createdTime.
    let all = store
        .list_deployments(&Page {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<&str> = all.iter().map(|d| d.deployment_id.as_str()).collect();
    assert_eq!(names, vec!["dep-3", "dep-2", "dep-1"]);
    let older = store
        .list_deployments(&Page {
            before: Some(d2.created_time),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].deployment_id.as_str(), "dep-1");
    let after = store
        .list_deployments(&Page {
            after: Some(Cursor {
                created_time: all[1].created_time,
                key: all[1].deployment_id.to_string(),
            }),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].deployment_id.as_str(), "dep-1");

    // Attribution: the latest deployment on one of the hosts within the window.
    let at = |m: u32| Utc.with_ymd_and_hms(2026, 11, 25, 9, m, 0).unwrap();
    let web2 = vec!["web-2".to_owned()];
    let found = store.latest_on_hosts(&web2, at(0), at(59)).await.unwrap();
    assert_eq!(
        found.unwrap().deployment_id.as_str(),
        "dep-2",
        "the most recent"
    );
    let found = store.latest_on_hosts(&web2, at(0), at(20)).await.unwrap();
    assert_eq!(
        found.unwrap().deployment_id.as_str(),
        "dep-1",
        "dep-2 came later"
    );
    let found = store
        .latest_on_hosts(&["web-1".into()], at(1), at(59))
        .await
        .unwrap();
    assert!(found.is_none(), "dep-1 was deployed before the window");
    assert!(store
        .latest_on_hosts(&["nope".into()], at(0), at(59))
        .await
        .unwrap()
        .is_none());
    assert!(store
        .latest_on_hosts(&[], at(0), at(59))
        .await
        .unwrap()
        .is_none());

    // A report without a snapshot gets the registered deployment's, in the insert itself,
    // without its rollback policy's secret; one with a snapshot keeps it (also without
    // the secret); one of an unregistered deployment has none.
    let mut d3 = d3;
    d3.rollback_policy = Some(policy());
    store.put_deployment(&d3).await.unwrap();
    assert_eq!(
        store.get_deployment(&id("dep-3")).await.unwrap().unwrap(),
        d3,
        "the registry keeps the secret"
    );
    let registered = report("dep-3", 41);
    assert_eq!(store.insert(&registered).await.unwrap(), Insert::Inserted);
    let snapshot = store.get(&id("dep-3")).await.unwrap().unwrap().deployment;
    let without_secret = |d: &Deployment| {
        let mut d = d.clone();
        if let Some(p) = d.rollback_policy.as_mut() {
            p.secret.clear();
        }
        d
    };
    assert_eq!(
        snapshot,
        Some(without_secret(&d3)),
        "a report never holds it"
    );
    let unregistered = report("dep-9", 41);
    assert_eq!(store.insert(&unregistered).await.unwrap(), Insert::Inserted);
    assert_eq!(
        store.get(&id("dep-9")).await.unwrap().unwrap().deployment,
        None
    );
    assert_eq!(
        store.insert(&report("dep-3", 42)).await.unwrap(),
        Insert::Exists(ReportStatus::Generating),
        "the first report stays"
    );

    // A report version keeps its deployment snapshot and change evidence.
    let mut r = report("dep-2", 31);
    r.deployment = Some(d2.clone());
    assert_eq!(store.insert(&r).await.unwrap(), Insert::Inserted);
    assert_eq!(store.get(&id("dep-2")).await.unwrap().unwrap(), r);
    let changes = Changes {
        repo: "acme/shop".into(),
        range: "v1.0.0...v1.30.0".into(),
        read: true,
        commits: 3,
        prs: vec![PullRequest {
            number: 42,
            title: "Warm the cache".into(),
            author: "dev".into(),
            url: "https://github.com/acme/shop/pull/42".into(),
            suspect: 3.2,
            files: vec![ChangedFile {
                path: "src/cache.go".into(),
                additions: 30,
                deletions: 1,
                suspect: 3.2,
                why: vec!["memory: cache".into()],
                patch: Some("@@\n+cache".into()),
            }],
        }],
        notes: vec!["a note".into()],
        ..Default::default()
    };
    assert!(store.set_changes(&id("dep-2"), 1, &changes).await.unwrap());
    assert!(
        !store.set_changes(&id("dep-2"), 2, &changes).await.unwrap(),
        "another version"
    );
    let got = store.get(&id("dep-2")).await.unwrap().unwrap();
    assert_eq!(got.changes, Some(changes));
    assert_eq!(got.deployment, Some(d2.clone()));
    // A re-diagnosis takes the registry's entry as read for it, and holds no secret.
    let now = Utc::now();
    let diagnoses: &dyn LeaseQueue<Diagnosis> = store;
    loop {
        let claimed = diagnoses
            .claim("w-dep", now, now + Duration::seconds(30))
            .await
            .unwrap()
            .expect("dep-2 is claimable");
        if claimed.deployment_id == id("dep-2") {
            break;
        }
    }
    let done = finish(ReportStatus::Completed, 32);
    assert!(diagnoses
        .complete(&held("dep-2", "w-dep"), &done)
        .await
        .unwrap());
    let again = store
        .rediagnose(
            &id("dep-2"),
            now,
            Restart {
                deployment: Some(d3.clone()),
                ..restart()
            },
        )
        .await
        .unwrap();
    assert!(matches!(again, Rediagnose::Restarted { .. }), "{again:?}");
    let got = store.get(&id("dep-2")).await.unwrap().unwrap();
    assert_eq!(got.version, 2);
    assert_eq!(got.deployment, Some(without_secret(&d3)));

    // Further alerts: recorded once each, the report's own alert is no further alert, a
    // resolved alert is stamped and a firing one clears the stamp.
    let further = |name: &str| RelatedAlert {
        alert: Alert {
            key: name.into(),
            alertname: "NodeHighMemory".into(),
            status: "firing".into(),
            starts_at: "2026-11-25T10:05:00Z".into(),
            ..Default::default()
        },
        received_at: at(45),
    };
    assert_eq!(
        store
            .add_related(&id("nope"), &further("f1"))
            .await
            .unwrap(),
        Related::NoReport
    );
    assert_eq!(
        store
            .add_related(&id("dep-2"), &further("f1"))
            .await
            .unwrap(),
        Related::Added(ReportStatus::Generating)
    );
    assert_eq!(
        store
            .add_related(&id("dep-2"), &further("f1"))
            .await
            .unwrap(),
        Related::Duplicate(ReportStatus::Generating)
    );
    let own = RelatedAlert {
        alert: r.alert.clone(),
        received_at: at(46),
    };
    assert_eq!(
        store.add_related(&id("dep-2"), &own).await.unwrap(),
        Related::Duplicate(ReportStatus::Generating),
        "the report's own alert sent again"
    );
    assert!(store.set_resolved(&id("dep-2"), at(50)).await.unwrap());
    assert!(!store.set_resolved(&id("nope"), at(50)).await.unwrap());
    let got = store.get(&id("dep-2")).await.unwrap().unwrap();
    assert_eq!(got.resolved_at, Some(at(50)));
    assert_eq!(got.related_alerts, vec![further("f1")]);
    for n in 0..(MAX_RELATED_ALERTS + 5) {
        store
            .add_related(&id("dep-2"), &further(&format!("g{n}")))
            .await
            .unwrap();
    }
    let got = store.get(&id("dep-2")).await.unwrap().unwrap();
    assert_eq!(got.resolved_at, None, "firing again");
    assert_eq!(
        got.related_alerts.len(),
        MAX_RELATED_ALERTS,
        "the newest kept"
    );
    assert_eq!(
        got.related_alerts.last().unwrap().alert.key,
        format!("g{}", MAX_RELATED_ALERTS + 4)
    );
    assert_eq!(
        store.add_related(&id("dep-2"), &own).await.unwrap(),
        Related::Duplicate(ReportStatus::Generating),
        "the report's own alert is a duplicate after any number of related alerts"
    );
    assert_eq!(
        store
            .add_related(
                &id("dep-2"),
                &further(&format!("g{}", MAX_RELATED_ALERTS + 4))
            )
            .await
            .unwrap(),
        Related::Duplicate(ReportStatus::Generating),
        "so is a related alert still kept"
    );
    assert_eq!(
        store
            .add_related(&id("dep-2"), &further("f1"))
            .await
            .unwrap(),
        Related::Added(ReportStatus::Generating),
        "one dropped from the list is new again"
    );

    // Unregistering leaves the report.
    assert!(store.delete_deployment(&id("dep-2")).await.unwrap());
    assert!(!store.delete_deployment(&id("dep-2")).await.unwrap());
    assert!(store.get_deployment(&id("dep-2")).await.unwrap().is_none());
    assert!(store.get(&id("dep-2")).await.unwrap().is_some());
    assert!(
        store
            .latest_on_hosts(&web2, at(0), at(59))
            .await
            .unwrap()
            .unwrap()
            .deployment_id
            .as_str()
            == "dep-1"
    );
}

#[tokio::test]
async fn the_embedded_store_meets_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("nested/reports.sqlite3")).unwrap();
    contract(Stores::of(store)).await;
    let store = EmbeddedStore::open(&dir.path().join("deployments.sqlite3")).unwrap();
    deployments_contract(&store).await;
    let store = EmbeddedStore::open(&dir.path().join("evidence.sqlite3")).unwrap();
    evidence_queue_contract(Stores::of(store.evidence_first(true))).await;
    let store = EmbeddedStore::open(&dir.path().join("outbox.sqlite3")).unwrap();
    outbox_contract(Stores::of(store)).await;
    let store = EmbeddedStore::open(&dir.path().join("queues.sqlite3")).unwrap();
    queues_contract(Stores::of(store)).await;
    let store = EmbeddedStore::open(&dir.path().join("growth.sqlite3")).unwrap();
    growth_contract(Stores::of(store)).await;
    let path = dir.path().join("budget.sqlite3");
    let (store, other) = (
        EmbeddedStore::open(&path).unwrap(),
        EmbeddedStore::open(&path).unwrap(),
    );
    budget_contract(&store, &other).await;
}

#[tokio::test]
async fn the_mongo_store_meets_the_store_contract() {
    let server = mongo().await;
    let db = format!("dd_contract_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&server.url, &db).await.unwrap();
    contract(Stores::of(store)).await;
    let db = format!("dd_deployments_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&server.url, &db).await.unwrap();
    deployments_contract(&store).await;
    let db = format!("dd_evidence_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&server.url, &db).await.unwrap();
    evidence_queue_contract(Stores::of(store.evidence_first(true))).await;
    let db = format!("dd_outbox_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&server.url, &db).await.unwrap();
    outbox_contract(Stores::of(store)).await;
    let db = format!("dd_queues_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&server.url, &db).await.unwrap();
    queues_contract(Stores::of(store)).await;
    let db = format!("dd_growth_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&server.url, &db).await.unwrap();
    growth_contract(Stores::of(store)).await;
    let db = format!("dd_budget_{}", uuid::Uuid::new_v4().simple());
    let (store, other) = (
        MongoStore::connect(&server.url, &db).await.unwrap(),
        MongoStore::connect(&server.url, &db).await.unwrap(),
    );
    budget_contract(&store, &other).await;
}

#[tokio::test]
async fn the_mongo_migration_creates_the_designs_indexes() {
    let server = mongo().await;
    let db_name = format!("dd_indexes_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&server.url, &db_name).await.unwrap();
    store.migrate().await.unwrap();

    let client = mongodb::Client::with_uri_str(&server.url).await.unwrap();
    let indexes: Vec<mongodb::IndexModel> = client
        .database(&db_name)
        .collection::<mongodb::bson::Document>("reports")
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    // Key directions compare as numbers: servers differ in the integer width they return.
    let shape = |keys: &mongodb::bson::Document| -> Vec<(String, i64)> {
        keys.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_i32()
                        .map(i64::from)
                        .or(v.as_i64())
                        .or(v.as_f64().map(|f| f as i64))
                        .unwrap(),
                )
            })
            .collect()
    };
    let find = |want: &[(&str, i64)]| {
        let want: Vec<(String, i64)> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        indexes.iter().find(|i| shape(&i.keys) == want).cloned()
    };
    let unique = find(&[("deploymentId", 1)])
        .unwrap_or_else(|| panic!("no deploymentId index in {indexes:?}"));
    assert_eq!(unique.options.and_then(|o| o.unique), Some(true));
    assert!(find(&[("createdTime", -1)]).is_some(), "{indexes:?}");
    assert!(
        find(&[("status", 1), ("updatedTime", -1)]).is_some(),
        "{indexes:?}"
    );

    // The design's Deployment collection, with its {createdTime: -1} index.
    let indexes: Vec<mongodb::IndexModel> = client
        .database(&db_name)
        .collection::<mongodb::bson::Document>("deployments")
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let find = |want: &[(&str, i64)]| {
        let want: Vec<(String, i64)> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        indexes.iter().find(|i| shape(&i.keys) == want).cloned()
    };
    assert!(find(&[("createdTime", -1)]).is_some(), "{indexes:?}");
    assert_eq!(
        find(&[("deploymentId", 1)]).and_then(|i| i.options.and_then(|o| o.unique)),
        Some(true)
    );
    assert!(
        find(&[("hostKeys", 1), ("deployedAt", -1)]).is_some(),
        "{indexes:?}"
    );
}

#[tokio::test]
async fn an_embedded_store_made_before_the_evidence_column_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite3");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../../migrations/sqlite/0001_reports.sql"))
            .unwrap();
    }
    let s = Stores::of(EmbeddedStore::open(&path).unwrap());
    let store = Arc::clone(&s.reports);
    store.migrate().await.unwrap();
    let old = report("dep-old", 1);
    assert_eq!(store.insert(&old).await.unwrap(), Insert::Inserted);
    assert!(s
        .gatherings
        .complete(
            &version("dep-old", 1),
            &settled(Ok(&gathered(evidence())), None)
        )
        .await
        .unwrap());
    store.migrate().await.expect("applied once");
    assert_eq!(
        store.get(&id("dep-old")).await.unwrap().unwrap().evidence,
        Some(evidence())
    );
}

/// Commits only append to the write-ahead log; the checkpointer thread, not a commit,
/// copies it into the database file, and the log is started again from its beginning.
#[tokio::test]
async fn the_embedded_store_checkpoints_its_log_outside_the_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reports.sqlite3");
    let store = EmbeddedStore::open(&path).unwrap();
    store.migrate().await.unwrap();
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let before = size(&path);
    let inserts = (0..300).map(|n| {
        let mut r = report(&format!("dep-{n}"), 1);
        r.alert
            .annotations
            .insert("description".into(), "x".repeat(2000));
        let store = store.clone();
        async move { store.insert(&r).await }
    });
    for result in futures_util::future::join_all(inserts).await {
        assert_eq!(result.unwrap(), Insert::Inserted);
    }
    // 300 reports of 2 KB: about 600 KB, which only a checkpoint puts in the file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size(&path) < before + 512 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {} bytes (before: {before})",
            size(&path)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Once caught up, the next commit writes at the start of the log, which stays small.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let wal = dir.path().join("reports.sqlite3-wal");
    let grown = size(&wal);
    store.insert(&report("dep-after", 2)).await.unwrap();
    assert!(size(&wal) <= grown, "the log kept growing: {}", size(&wal));
}

/// A stored value that cannot be read back is an error naming the report and what is
/// wrong, on both stores: never a silent default (a corrupt `usage` once read as none).
#[tokio::test]
async fn an_unreadable_stored_value_is_an_error_naming_its_report() {
    let named = |e: StoreError, report: &Report, what: &str| match e {
        StoreError::Corrupt { id, message } => {
            assert_eq!(id, report.id, "names the report");
            assert!(message.contains(what), "{message}");
        }
        other => panic!("not a corrupt-report error: {other}"),
    };

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.sqlite3");
    let store = EmbeddedStore::open(&path).unwrap();
    store.migrate().await.unwrap();
    let bad = report("bad-1", 1);
    store.insert(&bad).await.unwrap();
    let sql = rusqlite::Connection::open(&path).unwrap();
    sql.execute("UPDATE reports SET usage = 'not json'", [])
        .unwrap();
    named(store.get(&id("bad-1")).await.unwrap_err(), &bad, "usage");
    sql.execute(
        "UPDATE reports SET usage = NULL, status = 'completed', content = ''",
        [],
    )
    .unwrap();
    named(
        store.get(&id("bad-1")).await.unwrap_err(),
        &bad,
        "content is empty",
    );

    let server = mongo().await;
    let db = format!("dd_corrupt_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&server.url, &db).await.unwrap();
    store.migrate().await.unwrap();
    store.insert(&bad).await.unwrap();
    let raw = mongodb::Client::with_uri_str(&server.url)
        .await
        .unwrap()
        .database(&db)
        .collection::<mongodb::bson::Document>("reports");
    raw.update_one(
        mongodb::bson::doc! { "deploymentId": "bad-1" },
        mongodb::bson::doc! { "$set": { "usage": "not an object" } },
    )
    .await
    .unwrap();
    named(store.get(&id("bad-1")).await.unwrap_err(), &bad, "usage");
    let listed = store
        .list(&ListFilter {
            page: Page {
                limit: 10,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
    named(listed.unwrap_err(), &bad, "usage");
    raw.update_one(
        mongodb::bson::doc! { "deploymentId": "bad-1" },
        mongodb::bson::doc! { "$set": { "usage": null, "status": "completed", "content": "" } },
    )
    .await
    .unwrap();
    named(
        store.get(&id("bad-1")).await.unwrap_err(),
        &bad,
        "content is empty",
    );
}
