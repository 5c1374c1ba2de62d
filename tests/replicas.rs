//! Replica trials as the controller runs them: a LogSubscription's worker
//! Deployment shares an 8-shard stream through its Leases while events flow
//! through CloudWatch Logs and Kinesis to OpenSearch, and its workers are
//! killed (-9, restarted in their Pods by the node), scaled 1 → 3 → 1, and
//! rolled by a change of their configuration.
//!
//! Each trial prints one line: events sent, documents delivered, unique,
//! duplicates in the index, re-sent documents answered 409, lost, and the
//! takeover: from the change until every shard's lease is held by a running
//! worker (the killed worker's and the stopped workers' leases taken again
//! after the change), each worker holds its fair share, and every shard that
//! changed hands has checkpointed past where it stood at the change (or has
//! nothing left to deliver). Beside it: when every shard was held, when the
//! shares were fair, and the longest a shard went without a live holder. Any
//! loss or duplicate fails it, and so does a shard unheld for 30 s.
//!
//! `LOGSUB_REPLICA_TRIALS` kill trials (default 2) of `LOGSUB_REPLICA_EVENTS`
//! events each (default 10,000), put at `LOGSUB_REPLICA_RATE` events a second
//! (default 2,500); `LOGSUB_REPLICA_SEED` repeats a run's random choices.
//! `make trials` runs 20 trials of 100,000 events.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_sdk_kinesis::types::ShardIteratorType;
use common::controller::{
    Controller, aws_secret, condition, create, identity, log_group, start, wait_for,
};
use common::search::create_index;
use common::{TestNamespace, active_stream, eventually, report, stack, unique};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use logsub::api::LogSubscription;
use serde_json::{Value, json};
use tokio::time::Instant;

const NAME: &str = "app";
const SHARDS: usize = 8;
const SETTLE: Duration = Duration::from_secs(120);
/// The workers' lease duration and renew interval (the configuration's
/// defaults, which the controller renders): a shard whose holder is gone is
/// taken by another worker within both, and by the holder restarted in its
/// Pod at once. The node's restart backoff and a round of slack on top.
const HELD_WITHIN: Duration = Duration::from_secs(30);
/// Events per PutLogEvents call, each call one Kinesis record.
const PER_PUT: usize = 250;

/// The trials share two cores: their takeover times are measured one
/// subscription at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{key}={v}: a number")))
        .unwrap_or(default)
}

fn events_per_trial() -> usize {
    usize::try_from(env_or("LOGSUB_REPLICA_EVENTS", 10_000)).expect("events")
}

fn rate() -> usize {
    usize::try_from(env_or("LOGSUB_REPLICA_RATE", 2_500)).expect("rate")
}

/// xorshift64*: enough to pick moments and Pods, and repeatable by its seed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = env_or(
            "LOGSUB_REPLICA_SEED",
            u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .subsec_nanos(),
            ),
        );
        eprintln!("replica trials: LOGSUB_REPLICA_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A fraction in [lo, hi).
    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("index")
    }
}

/// One LogSubscription with its controller, stream, log group and index.
struct Rig {
    ns: TestNamespace,
    _controller: Controller,
    logs: aws_sdk_cloudwatchlogs::Client,
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    group: String,
    index: String,
    base: String,
}

async fn rig(replicas: usize) -> Rig {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    eprintln!("replica trials: namespace {}", ns.name);
    let aws = stack().aws().await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&aws);
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let shards = i32::try_from(SHARDS).expect("shards");
    let (stream, _) = active_stream(&kinesis, "replicas", shards).await;
    let group = format!("/{}", unique("replicas"));
    log_group(&logs, &group, "app-1").await;
    let base = stack().var("OPENSEARCH_URL").to_owned();
    let index = unique("replicas").to_lowercase();
    let numbers = json!({"properties": {"trial": {"type": "long"}, "n": {"type": "long"}}});
    create_index(&base, &index, 1, numbers).await;
    let env = aws_secret(&ns).await;
    let kubeconfig = identity(&ns).await;
    let controller = start(&ns, &kubeconfig, "30s");
    create(
        &ns,
        json!({
            "apiVersion": "logsub.io/v1alpha1",
            "kind": "LogSubscription",
            "metadata": {"name": NAME},
            "spec": {
                "source": {
                    "logGroups": {"names": [group]},
                    "roleArn": "arn:aws:iam::123456789012:role/CWLtoKinesis",
                    // One log stream's records spread over every shard.
                    "distribution": "Random",
                },
                "stream": {"existing": {"name": stream}},
                "transforms": [{"json": {}}],
                "sink": {"elasticsearch": {"endpoint": base, "index": index}},
                "workers": {"replicas": replicas, "env": env, "batch": {"maxWait": "200ms"}},
            }
        }),
    )
    .await;
    wait_for(&ns, NAME, "Ready", SETTLE, |l: &LogSubscription| {
        (condition(l, "Ready")? == ("True".into(), "Ready".into())).then_some(())
    })
    .await;
    let rig = Rig {
        ns,
        _controller: controller,
        logs,
        kinesis,
        stream,
        group,
        index,
        base,
    };
    rig.steady(replicas, "").await;
    rig
}

/// A worker Pod as the trials see it.
#[derive(Clone, Debug)]
struct Worker {
    name: String,
    /// The pid of its running container (the local node names it in the
    /// container id).
    pid: u32,
    /// The worker template it runs.
    hash: String,
}

/// A shard lease as the trials see it.
#[derive(Clone, Debug)]
struct Held {
    shard: String,
    holder: Option<String>,
    acquired: Option<Timestamp>,
    checkpoint: String,
}

impl Rig {
    /// The worker Pods whose container runs and that are not being stopped.
    async fn workers(&self) -> Vec<Worker> {
        let Ok(pods) = self
            .ns
            .api::<Pod>()
            .list(&ListParams::default().labels("app.kubernetes.io/component=worker"))
            .await
        else {
            return Vec::new();
        };
        pods.items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let status = p.status?.container_statuses?.into_iter().next()?;
                status.state?.running?;
                let pid = status
                    .container_id?
                    .strip_prefix("localnode://")?
                    .parse()
                    .ok()?;
                let hash = p
                    .metadata
                    .annotations?
                    .get("logsub.io/config-hash")?
                    .clone();
                Some(Worker {
                    name: p.metadata.name?,
                    pid,
                    hash,
                })
            })
            .collect()
    }

    async fn leases(&self) -> Vec<Held> {
        let Ok(leases) = self
            .ns
            .api::<Lease>()
            .list(&ListParams::default().labels(&format!("logsub.io/subscription={NAME}")))
            .await
        else {
            return Vec::new();
        };
        leases
            .items
            .into_iter()
            .map(|l| {
                let annotation = |key: &str| {
                    l.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(key))
                        .cloned()
                        .unwrap_or_default()
                };
                let spec = l.spec.clone().unwrap_or_default();
                Held {
                    shard: annotation("logsub.io/shard-id"),
                    holder: spec.holder_identity.filter(|h| !h.is_empty()),
                    acquired: spec.acquire_time.map(|t| t.0),
                    checkpoint: annotation("logsub.io/checkpoint"),
                }
            })
            .collect()
    }

    /// Waits until `replicas` workers (of a template other than `not_hash`)
    /// run and hold every shard between them.
    async fn steady(&self, replicas: usize, not_hash: &str) {
        eventually(
            &format!("{replicas} workers holding all {SHARDS} shards"),
            SETTLE,
            || async {
                let live: BTreeSet<String> = self
                    .workers()
                    .await
                    .into_iter()
                    .filter(|w| w.hash != not_hash)
                    .map(|w| w.name)
                    .collect();
                let leases = self.leases().await;
                (live.len() == replicas
                    && leases.len() == SHARDS
                    && leases
                        .iter()
                        .all(|l| l.holder.as_ref().is_some_and(|h| live.contains(h))))
                .then_some(())
            },
        )
        .await;
    }

    /// Whether the shard has nothing after `checkpoint` (nothing to deliver).
    async fn at_tip(&self, shard: &str, checkpoint: &str) -> bool {
        if checkpoint == "SHARD_END" {
            return true;
        }
        let request = self
            .kinesis
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard);
        let request = if checkpoint.is_empty() {
            request.shard_iterator_type(ShardIteratorType::TrimHorizon)
        } else {
            request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(checkpoint)
        };
        let Some(iterator) = request.send().await.ok().and_then(|r| r.shard_iterator) else {
            return false;
        };
        self.kinesis
            .get_records()
            .shard_iterator(iterator)
            .limit(1)
            .send()
            .await
            .is_ok_and(|r| r.records.is_empty())
    }

    /// Waits until every shard's checkpoint is at its tip: everything put
    /// is delivered and acknowledged, and no replay is still to come.
    async fn settle(&self, within: Duration) {
        eventually("every checkpoint at its shard's tip", within, || async {
            let leases = self.leases().await;
            if leases.len() != SHARDS {
                return None;
            }
            for lease in &leases {
                if !self.at_tip(&lease.shard, &lease.checkpoint).await {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// Puts `count` events of `trial` at `rate` a second, in calls of
    /// [`PER_PUT`] (each a Kinesis record on a random shard).
    fn produce(&self, trial: u64, count: usize) -> tokio::task::JoinHandle<()> {
        let (logs, group) = (self.logs.clone(), self.group.clone());
        let every = Duration::from_secs_f64(PER_PUT as f64 / rate() as f64);
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(every);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for from in (0..count).step_by(PER_PUT) {
                pace.tick().await;
                let at = logsub::time::now_millis();
                let events = (from..(from + PER_PUT).min(count)).map(|n| {
                    InputLogEvent::builder()
                        .timestamp(at)
                        .message(format!(r#"{{"trial": {trial}, "n": {n}}}"#))
                        .build()
                        .expect("an event")
                });
                logs.put_log_events()
                    .log_group_name(&group)
                    .log_stream_name("app-1")
                    .set_log_events(Some(events.collect()))
                    .send()
                    .await
                    .expect("put log events");
            }
        })
    }

    /// The `n` of every document of `trial`, once per document.
    async fn delivered(&self, trial: u64) -> Vec<u64> {
        let http = reqwest::Client::new();
        let base = &self.base;
        let refreshed = http
            .post(format!("{base}/{}/_refresh", self.index))
            .send()
            .await
            .expect("refresh");
        assert!(refreshed.status().is_success(), "refresh: {refreshed:?}");
        let mut page: Value = http
            .post(format!("{base}/{}/_search?scroll=1m", self.index))
            .json(&json!({
                "size": 10_000,
                "sort": ["_doc"],
                "_source": ["n"],
                "query": {"term": {"trial": trial}},
            }))
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("search json");
        let mut out = Vec::new();
        loop {
            let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
            if hits.is_empty() {
                break;
            }
            out.extend(hits.iter().map(|h| {
                h["_source"]["n"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("a document without its n: {h}"))
            }));
            page = http
                .post(format!("{base}/_search/scroll"))
                .json(&json!({"scroll": "1m", "scroll_id": page["_scroll_id"]}))
                .send()
                .await
                .expect("scroll")
                .json()
                .await
                .expect("scroll json");
        }
        if let Some(id) = page["_scroll_id"].as_str() {
            let _ = http
                .delete(format!("{base}/_search/scroll"))
                .json(&json!({"scroll_id": id}))
                .send()
                .await;
        }
        out
    }

    /// Writes the index refused: OpenSearch counts each `create` answered
    /// 409 (the document is there already) as a failed index operation. Any
    /// other refusal would be a loss or a dead letter, both counted apart.
    async fn refused_writes(&self) -> u64 {
        let stats: Value = reqwest::get(format!("{}/{}/_stats/indexing", self.base, self.index))
            .await
            .expect("index stats")
            .json()
            .await
            .expect("stats json");
        stats["_all"]["primaries"]["indexing"]["index_failed"]
            .as_u64()
            .expect("index_failed")
    }

    async fn dead_letters(&self) -> u64 {
        let counted: Value = reqwest::Client::new()
            .post(format!("{}/{}/_count", self.base, self.index))
            .json(&json!({"query": {"exists": {"field": "@dead_letter"}}}))
            .send()
            .await
            .expect("count")
            .json()
            .await
            .expect("count json");
        counted["count"].as_u64().expect("count")
    }

    async fn patch_workers(&self, workers: Value) {
        self.ns
            .api::<LogSubscription>()
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"workers": workers}})),
            )
            .await
            .expect("patch the LogSubscription");
    }

    /// The config hash of the Deployment's worker template.
    async fn template_hash(&self) -> Option<String> {
        self.ns
            .api::<Deployment>()
            .get(&format!("{NAME}-worker"))
            .await
            .ok()?
            .spec
            .template
            .metadata?
            .annotations?
            .get("logsub.io/config-hash")
            .cloned()
    }
}

/// What a trial does to the workers.
#[derive(Clone, Copy)]
enum Change {
    /// kill -9 a random worker's process.
    Kill,
    /// Patch `spec.workers.replicas` from the first to the second.
    Scale(usize, usize),
    /// Change the batch settings, so the workers roll (at this many replicas).
    Roll(usize),
}

/// How long the shards took to be held again after the change.
struct Takeover {
    /// Every shard held by a live worker, those of gone or replaced workers
    /// taken again after the change.
    held: Duration,
    /// And each shard that changed hands has checkpointed past where it was
    /// at the change (or had nothing left to deliver).
    progressing: Duration,
    /// Every live worker holding at least its fair share, rounded down.
    balanced: Duration,
    /// The longest a shard went without a live holder.
    longest_unheld: Duration,
    what: String,
}

/// One trial's counts.
struct Outcome {
    sent: usize,
    delivered: usize,
    unique: usize,
    duplicates: usize,
    answered_409: u64,
    dead_lettered: u64,
    lost: usize,
}

async fn trial(
    rig: &Rig,
    name: &str,
    id: u64,
    change: Change,
    rng: &mut Rng,
) -> (Outcome, Takeover) {
    let sent = events_per_trial();
    let refused_before = rig.refused_writes().await;
    let producing = Duration::from_secs_f64(sent as f64 / rate() as f64);
    let producer = rig.produce(id, sent);
    // A random moment while the events flow.
    tokio::time::sleep(producing.mul_f64(rng.between(0.15, 0.75))).await;

    let before = rig.leases().await;
    let changed_at = Timestamp::now();
    let started = Instant::now();
    let (replicas, gone, not_hash, what) = match change {
        Change::Kill => {
            let workers = rig.workers().await;
            assert!(!workers.is_empty(), "a running worker to kill");
            let victim = workers[rng.below(workers.len())].clone();
            signal(victim.pid, "KILL");
            let shards = before
                .iter()
                .filter(|l| l.holder.as_deref() == Some(victim.name.as_str()))
                .count();
            (
                workers.len(),
                Some(victim.clone()),
                String::new(),
                format!("killed {} holding {shards} shards", victim.name),
            )
        }
        Change::Scale(from, to) => {
            rig.patch_workers(json!({"replicas": to})).await;
            (to, None, String::new(), format!("replicas {from} -> {to}"))
        }
        Change::Roll(replicas) => {
            let old = rig.template_hash().await.expect("the worker template");
            rig.patch_workers(json!({"batch": {"maxWait": "300ms", "maxEvents": 2000}}))
                .await;
            (
                replicas,
                None,
                old,
                "batch settings changed, workers rolled".into(),
            )
        }
    };

    // For a rolling update, `held` is when every shard is on a new worker.
    let (mut held, mut balanced, mut progressing) = (None, None, None);
    // Per shard: since when it has had no live holder, and the longest
    // such stretch.
    let mut unheld: BTreeMap<String, Instant> = BTreeMap::new();
    let mut longest_unheld = Duration::ZERO;
    let deadline = started + SETTLE;
    // Polled, as `eventually` does, but several moments are timed at once.
    while progressing.is_none() {
        assert!(
            Instant::now() < deadline,
            "{name}: shards not held and progressing {SETTLE:?} after the change: {:?}",
            rig.leases().await
        );
        let running: BTreeMap<String, Worker> = rig
            .workers()
            .await
            .into_iter()
            .filter(|w| {
                gone.as_ref()
                    .is_none_or(|g| g.name != w.name || g.pid != w.pid)
            })
            .map(|w| (w.name.clone(), w))
            .collect();
        let leases = rig.leases().await;
        let now = started.elapsed();
        let taken_after = |l: &Held| l.acquired.is_some_and(|t| t > changed_at);
        let was = |l: &Held| before.iter().find(|b| b.shard == l.shard);
        // The killed worker's process comes back under the same name: its
        // shards count once taken again.
        let retaken = |l: &Held| {
            gone.as_ref().is_none_or(|g| {
                was(l).and_then(|b| b.holder.as_deref()) != Some(g.name.as_str()) || taken_after(l)
            })
        };
        let held_by = |l: &Held, new_only: bool| {
            l.holder
                .as_ref()
                .and_then(|h| running.get(h))
                .is_some_and(|w| !new_only || w.hash != not_hash)
                && retaken(l)
        };
        for l in &leases {
            if held_by(l, false) {
                if let Some(since) = unheld.remove(&l.shard) {
                    longest_unheld = longest_unheld.max(since.elapsed());
                }
            } else {
                unheld.entry(l.shard.clone()).or_insert_with(Instant::now);
            }
        }
        let live = running.values().filter(|w| w.hash != not_hash).count();
        let all_held =
            live == replicas && leases.len() == SHARDS && leases.iter().all(|l| held_by(l, true));
        if !all_held {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        held.get_or_insert(now);
        let share = SHARDS / replicas;
        let fair = running.keys().all(|w| {
            leases
                .iter()
                .filter(|l| l.holder.as_deref() == Some(w.as_str()))
                .count()
                >= share
        });
        if fair {
            balanced.get_or_insert(now);
            let mut moving = true;
            for l in &leases {
                let handed_over = taken_after(l) || was(l).is_none_or(|b| b.holder != l.holder);
                let moved = was(l).is_none_or(|b| b.checkpoint != l.checkpoint);
                if handed_over && !moved && !rig.at_tip(&l.shard, &l.checkpoint).await {
                    moving = false;
                    break;
                }
            }
            if moving {
                progressing = Some(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for since in unheld.values() {
        longest_unheld = longest_unheld.max(since.elapsed());
    }
    let takeover = Takeover {
        held: held.expect("held"),
        progressing: progressing.expect("progressing"),
        balanced: balanced.expect("balanced"),
        longest_unheld,
        what,
    };

    producer.await.expect("the producer");
    rig.settle(SETTLE + producing).await;
    rig.steady(replicas, &not_hash).await;
    let delivered = rig.delivered(id).await;
    let unique: BTreeSet<u64> = delivered.iter().copied().collect();
    let outcome = Outcome {
        sent,
        delivered: delivered.len(),
        unique: unique.len(),
        duplicates: delivered.len() - unique.len(),
        answered_409: rig.refused_writes().await - refused_before,
        dead_lettered: rig.dead_letters().await,
        lost: (0..sent as u64).filter(|n| !unique.contains(n)).count(),
    };
    report(&format!(
        "trial {name}: sent {}, delivered {}, unique {}, duplicates {}, answered 409 {}, dead-lettered {}, lost {}, takeover {:.1}s (held {:.1}s, balanced {:.1}s, longest unheld {:.1}s; {})",
        outcome.sent,
        outcome.delivered,
        outcome.unique,
        outcome.duplicates,
        outcome.answered_409,
        outcome.dead_lettered,
        outcome.lost,
        takeover.progressing.as_secs_f64(),
        takeover.held.as_secs_f64(),
        takeover.balanced.as_secs_f64(),
        takeover.longest_unheld.as_secs_f64(),
        takeover.what,
    ));
    assert_eq!(outcome.lost, 0, "{name}: events lost");
    assert_eq!(outcome.duplicates, 0, "{name}: events stored twice");
    assert_eq!(outcome.dead_lettered, 0, "{name}: dead letters");
    assert!(
        unique.iter().all(|n| *n < sent as u64),
        "{name}: documents of events never sent"
    );
    // A rollout waits for each new Pod to be ready before it stops an old
    // one; its shards stay held throughout, which is what is bounded.
    if !matches!(change, Change::Roll(_)) {
        assert!(
            takeover.held <= HELD_WITHIN,
            "{name}: every shard held again only after {:?}",
            takeover.held
        );
    }
    assert!(
        takeover.longest_unheld <= HELD_WITHIN,
        "{name}: a shard went {:?} without a live holder",
        takeover.longest_unheld
    );
    (outcome, takeover)
}

fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -{signal} {pid}");
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Three workers of an 8-shard stream; at a random moment of each trial's
/// events, one random worker's process is killed (-9) and its node restarts
/// it in the same Pod, under the same lease identity.
#[tokio::test]
async fn workers_killed_at_random_lose_and_double_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let trials = env_or("LOGSUB_REPLICA_TRIALS", 2);
    let mut rng = Rng::new();
    let rig = rig(3).await;
    let mut outcomes = Vec::new();
    for t in 1..=trials {
        let name = format!("replicas-kill-{t}/{trials}");
        outcomes.push(trial(&rig, &name, t, Change::Kill, &mut rng).await);
    }
    let mut takeovers: Vec<Duration> = outcomes.iter().map(|(_, t)| t.progressing).collect();
    takeovers.sort_unstable();
    let total = |f: fn(&Outcome) -> u64| outcomes.iter().map(|(o, _)| f(o)).sum::<u64>();
    report(&format!(
        "replica kill trials: {} trials; takeover min {}, median {}, max {}; sent {}, delivered {}, unique {}, duplicates {}, answered 409 {}, lost {}",
        outcomes.len(),
        seconds(takeovers[0]),
        seconds(takeovers[takeovers.len() / 2]),
        seconds(takeovers[takeovers.len() - 1]),
        total(|o| o.sent as u64),
        total(|o| o.delivered as u64),
        total(|o| o.unique as u64),
        total(|o| o.duplicates as u64),
        total(|o| o.answered_409),
        total(|o| o.lost as u64),
    ));
    rig.ns.delete().await;
}

/// `spec.workers.replicas` patched 1 → 3 → 1 while events flow: the new
/// workers take their share, the stopped ones hand theirs over.
#[tokio::test]
async fn scaling_under_load_loses_and_doubles_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut rng = Rng::new();
    let rig = rig(1).await;
    trial(
        &rig,
        "replicas-scale-1-to-3",
        1,
        Change::Scale(1, 3),
        &mut rng,
    )
    .await;
    trial(
        &rig,
        "replicas-scale-3-to-1",
        2,
        Change::Scale(3, 1),
        &mut rng,
    )
    .await;
    rig.ns.delete().await;
}

/// A change of the batch settings changes the worker template's hash, and
/// the Deployment rolls its three workers while events flow.
#[tokio::test]
async fn a_rolling_update_under_load_loses_and_doubles_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut rng = Rng::new();
    let rig = rig(3).await;
    trial(
        &rig,
        "replicas-rolling-update",
        1,
        Change::Roll(3),
        &mut rng,
    )
    .await;
    rig.ns.delete().await;
}
