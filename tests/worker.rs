//! `logsub worker` end to end on the stack: CloudWatch Logs → Kinesis → worker
//! processes → NDJSON on stdout, with shard leases on the real API server.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::pipeline::{
    Setup, collect, collect_delivered, holders, lease_checkpoints, metrics_text, published_health,
    put, setup, stop, worker, worker_with_admin,
};
use common::{eventually, stack};
use serde_json::Value;
use tokio::sync::mpsc;

#[tokio::test]
async fn events_arrive_on_stdout_once_each_in_stream_order() {
    let streams = ["app-1", "app-2", "app-3", "app-4"];
    let setup = setup(2, &streams).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (child, admin) = worker_with_admin(&setup.config, "worker-1", tx);

    let mut sent = Vec::new();
    for round in 0..3 {
        for s in streams {
            let batch: Vec<String> = (0..5)
                .map(|i| format!("{s} event {}", round * 5 + i))
                .collect();
            put(&setup, s, &batch).await;
            sent.extend(batch);
        }
    }
    let docs = collect(&mut rx, sent.len()).await;
    let messages: Vec<&str> = docs
        .iter()
        .map(|d| d["@message"].as_str().expect("@message"))
        .collect();
    let unique: HashSet<&str> = messages.iter().copied().collect();
    assert_eq!(unique.len(), sent.len(), "no duplicates");
    assert_eq!(
        unique,
        sent.iter().map(String::as_str).collect::<HashSet<_>>(),
        "none missing"
    );
    for s in streams {
        let order: Vec<&str> = messages
            .iter()
            .copied()
            .filter(|m| m.starts_with(s))
            .collect();
        let want: Vec<String> = (0..15).map(|i| format!("{s} event {i}")).collect();
        assert_eq!(order, want, "{s} in order");
    }
    for doc in &docs {
        assert_eq!(doc["@owner"], "123456789012");
        assert_eq!(doc["@log_group"], setup.group.as_str());
        assert_eq!(doc["@id"].as_str().map(str::len), Some(56));
        assert!(doc["@timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    // The counter moves just after each write reaches stdout.
    let metrics = eventually(
        "60 events counted as sent",
        Duration::from_secs(10),
        || async {
            let text = metrics_text(admin).await?;
            text.contains("component_sent_events_total 60")
                .then_some(text)
        },
    )
    .await;
    assert!(
        metrics.contains("logsub_worker_records_read_total{shard=\"shardId-"),
        "{metrics}"
    );
    assert!(metrics.contains("logsub_worker_leases_held 2"), "{metrics}");
    let ready = reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(
        holders(&setup.ns.name).await.get("worker-1"),
        Some(&2),
        "one worker holds both shards"
    );

    stop(child).await;
    let after = holders(&setup.ns.name).await;
    assert_eq!(
        after.get(""),
        Some(&2),
        "leases released on SIGTERM: {after:?}"
    );
    setup.ns.delete().await;
}

#[tokio::test]
async fn two_workers_split_the_shards() {
    let setup = setup(4, &["a"]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let one = worker(&setup.config, "worker-1", tx.clone());
    let two = worker(&setup.config, "worker-2", tx);
    let ns = setup.ns.name.clone();
    let split = eventually(
        "two workers holding two shards each",
        Duration::from_secs(60),
        || {
            let ns = ns.clone();
            async move {
                let h = holders(&ns).await;
                (h.get("worker-1") == Some(&2) && h.get("worker-2") == Some(&2)).then_some(h)
            }
        },
    )
    .await;
    assert_eq!(split.values().sum::<usize>(), 4);

    let sent: Vec<String> = (0..20).map(|i| format!("a event {i}")).collect();
    put(&setup, "a", &sent).await;
    let docs = collect(&mut rx, sent.len()).await;
    let got: Vec<&str> = docs
        .iter()
        .map(|d| d["@message"].as_str().expect("@message"))
        .collect();
    assert_eq!(
        got,
        sent.iter().map(String::as_str).collect::<Vec<_>>(),
        "once each, in order"
    );

    stop(one).await;
    stop(two).await;
    setup.ns.delete().await;
}

fn messages(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["@message"].as_str().expect("@message").to_owned())
        .collect()
}

#[tokio::test]
async fn a_restarted_worker_resumes_from_its_checkpoint() {
    let setup = setup(1, &["app"]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = worker(&setup.config, "worker-1", tx);
    let before: Vec<String> = (0..20).map(|i| format!("before restart {i}")).collect();
    put(&setup, "app", &before).await;
    assert_eq!(messages(&collect(&mut rx, before.len()).await), before);
    stop(first).await; // SIGTERM writes the final checkpoint

    let (tx, mut rx) = mpsc::unbounded_channel();
    let second = worker(&setup.config, "worker-2", tx);
    let after: Vec<String> = (0..5).map(|i| format!("after restart {i}")).collect();
    put(&setup, "app", &after).await;
    let got = messages(&collect(&mut rx, after.len()).await);
    assert_eq!(got, after, "only the new events: nothing replayed");
    stop(second).await;
    assert!(rx.try_recv().is_err(), "and nothing more");
    setup.ns.delete().await;
}

#[tokio::test]
async fn shards_of_a_killed_worker_continue_on_the_other() {
    let streams = ["s1", "s2", "s3", "s4", "s5", "s6"];
    let setup = setup(2, &streams).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let one = worker(&setup.config, "worker-1", tx.clone());
    let mut two = worker(&setup.config, "worker-2", tx);
    let ns = setup.ns.name.clone();
    eventually("one shard each", Duration::from_secs(60), || {
        let ns = ns.clone();
        async move {
            let h = holders(&ns).await;
            (h.get("worker-1") == Some(&1) && h.get("worker-2") == Some(&1)).then_some(())
        }
    })
    .await;

    let mut sent = Vec::new();
    for s in streams {
        let batch: Vec<String> = (0..10).map(|i| format!("{s} before {i}")).collect();
        put(&setup, s, &batch).await;
        sent.extend(batch);
    }
    let mut docs = collect_delivered(&mut rx, sent.len()).await;

    // kill -9: no checkpoint, no release. The other worker takes over once the
    // lease has gone unrenewed for its duration (4 s here).
    two.kill().await.expect("kill -9");
    let killed = tokio::time::Instant::now();
    let ns = setup.ns.name.clone();
    eventually(
        "worker-1 holding both shards",
        Duration::from_secs(30),
        || {
            let ns = ns.clone();
            async move { (holders(&ns).await.get("worker-1") == Some(&2)).then_some(()) }
        },
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9: {takeover:?}");
    assert!(
        takeover < Duration::from_secs(4 + 1 + 3),
        "within the lease duration plus a renew round: {takeover:?}"
    );

    for s in streams {
        let batch: Vec<String> = (0..10).map(|i| format!("{s} after {i}")).collect();
        put(&setup, s, &batch).await;
        sent.extend(batch);
    }
    // Everything arrives. What the killed worker delivered after its last
    // checkpoint arrives again from the taker (at least once; sinks dedupe by @id).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let want: HashSet<String> = sent.iter().cloned().collect();
    loop {
        let seen: HashSet<String> = docs
            .iter()
            .map(|d| d.doc["@message"].as_str().unwrap_or_default().to_owned())
            .collect();
        if want.is_subset(&seen) {
            break;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(doc)) => docs.push(doc),
            _ => panic!(
                "missing after the takeover: {:?}",
                want.difference(&seen).collect::<Vec<_>>()
            ),
        }
    }
    // At least once: what a worker delivered after its shard's last checkpoint
    // comes again after a handoff (sinks dedupe by @id). Events written after the
    // takeover have one reader only: exactly once.
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &docs {
        *count
            .entry(d.doc["@id"].as_str().expect("@id"))
            .or_default() += 1;
    }
    assert_eq!(count.len(), sent.len(), "every event, by id");
    let replayed: usize = count.values().map(|n| n - 1).sum();
    // A record can come three times: from the thief during a steal, from its
    // victim until it notices, and from the taker after the kill.
    assert!(
        replayed <= 2 * 60,
        "redeliveries beyond the handoffs: {replayed}"
    );
    for d in &docs {
        let message = d.doc["@message"].as_str().unwrap_or_default();
        if message.contains(" after ") {
            assert_eq!(
                d.by, "worker-1",
                "{message}: only the survivor reads after the takeover"
            );
            assert_eq!(
                count[d.doc["@id"].as_str().expect("@id")],
                1,
                "{message} exactly once"
            );
        }
    }
    eprintln!(
        "replayed after kill -9: {replayed} of {} events",
        sent.len()
    );
    stop(one).await;
    setup.ns.delete().await;
}

#[tokio::test]
async fn the_worker_runs_as_a_pod_with_in_cluster_config() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::PostParams;

    let setup = setup(1, &["pod"]).await;
    let ns = &setup.ns;
    let client = stack().kube().await;
    let config_text = std::fs::read_to_string(&setup.config).expect("config");
    let env: Vec<Value> = stack()
        .child_env()
        .into_iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
        .chain([serde_json::json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})])
        .collect();
    // What the controller will create: a ServiceAccount allowed its Leases only,
    // the configuration in a ConfigMap, and a Deployment running `logsub worker`.
    let objects = serde_json::json!([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "logsub-worker"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "logsub-worker"},
         "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "verbs": ["get", "list", "watch", "create", "update", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "logsub-worker"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "logsub-worker"},
         "subjects": [{"kind": "ServiceAccount", "name": "logsub-worker", "namespace": ns.name}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "logsub-worker"}, "data": {"worker.yaml": config_text}},
    ]);
    for object in objects.as_array().expect("objects") {
        let kind = object["kind"].as_str().expect("kind");
        let resource = match kind {
            "ServiceAccount" => "serviceaccounts",
            "Role" => "roles",
            "RoleBinding" => "rolebindings",
            _ => "configmaps",
        };
        let (group, version) = match object["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .split_once('/')
        {
            Some((g, v)) => (g, v),
            None => ("", "v1"),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let api_resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, resource);
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(client.clone(), &ns.name, &api_resource);
        let object: kube::api::DynamicObject =
            serde_json::from_value(object.clone()).expect("object");
        api.create(&PostParams::default(), &object)
            .await
            .expect("create");
    }
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "logsub-worker"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "logsub-worker"}},
            "template": {
                "metadata": {"labels": {"app": "logsub-worker"}},
                "spec": {
                    "serviceAccountName": "logsub-worker",
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "worker",
                        "image": "logsub:test",
                        "args": ["worker", "--config", "/etc/logsub/worker.yaml"],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1},
                        "env": env,
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/logsub", "readOnly": true}],
                        "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": "logsub-worker"}}],
                },
            },
        },
    }))
    .expect("deployment");
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");

    // The pod takes the shard's lease under its own name, through in-cluster config.
    let namespace = ns.name.clone();
    let holder = eventually("the pod holding the lease", Duration::from_secs(60), || {
        let namespace = namespace.clone();
        async move {
            let h = holders(&namespace).await;
            h.keys().find(|k| k.starts_with("logsub-worker-")).cloned()
        }
    })
    .await;

    // Ready through its /readyz probe, so the Deployment counts it available.
    let deployments = ns.api::<Deployment>();
    eventually("the Deployment available", Duration::from_secs(60), || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("logsub-worker").await.ok()?;
            (d.status?.available_replicas? == 1).then_some(())
        }
    })
    .await;

    let sent: Vec<String> = (0..10).map(|i| format!("from the pod {i}")).collect();
    put(&setup, "pod", &sent).await;
    let log = format!(
        "{}/pods/{}_{}_worker.log",
        stack().var("LOGSUB_STACK_LOGS"),
        ns.name,
        holder
    );
    let got = eventually(
        "the documents in the pod's output",
        Duration::from_secs(60),
        || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).ok()?;
                let messages: Vec<String> = text
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter_map(|d| d["@message"].as_str().map(str::to_owned))
                    .collect();
                (messages.len() >= 10).then_some(messages)
            }
        },
    )
    .await;
    assert_eq!(got, sent);
    setup.ns.delete().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

#[tokio::test]
async fn corrupt_records_and_gzip_bombs_are_dead_lettered_and_the_shard_goes_on() {
    let setup = setup(1, &["app"]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (child, admin) = worker_with_admin(&setup.config, "worker-1", tx);
    put(&setup, "app", &["before".to_owned()]).await;
    // Raw records beside the subscription's: one not gzip at all, and one that
    // inflates to 64 MiB (past the 16 MiB cap) from about 64 KiB on the wire.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20, "fits in a Kinesis record");
    for data in [b"not gzip at all".to_vec(), bomb] {
        setup
            .kinesis
            .put_record()
            .stream_name(&setup.stream)
            .partition_key("raw")
            .data(aws_sdk_kinesis::primitives::Blob::new(data))
            .send()
            .await
            .expect("put record");
    }
    put(&setup, "app", &["after".to_owned()]).await;

    let docs = collect(&mut rx, 4).await;
    assert_eq!(docs[0]["@message"], "before");
    assert_eq!(docs[3]["@message"], "after", "the shard goes on");
    let errors: Vec<&str> = docs[1..3]
        .iter()
        .map(|d| d["@dead_letter"]["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(errors, ["not_gzip", "too_large"]);
    for dead in &docs[1..3] {
        let id = dead["@id"].as_str().expect("@id");
        let sequence = dead["@dead_letter"]["sequence_number"]
            .as_str()
            .expect("sequence");
        assert_eq!(
            id,
            format!("deadletter-shardId-000000000000-{sequence}"),
            "the dead letter says where the record was"
        );
        assert!(
            dead["@timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "at the record's arrival: {dead}"
        );
    }
    assert_eq!(
        docs[1]["@dead_letter"]["data_base64"], "bm90IGd6aXAgYXQgYWxs",
        "a small record is kept whole"
    );
    assert_eq!(
        docs[2]["@dead_letter"]["message"], "payload inflates past 16777216 bytes",
        "the cap in force"
    );

    // Both are counted, and the lease tells the controller.
    let text = eventually("dead letters counted", Duration::from_secs(10), || async {
        let text = metrics_text(admin).await?;
        text.contains("component_sent_events_total 4")
            .then_some(text)
    })
    .await;
    for kind in ["not_gzip", "too_large"] {
        assert!(
            text.contains(&format!(
                "component_errors_total{{error_type=\"{kind}\",stage=\"processing\"}} 1"
            )),
            "{text}"
        );
    }
    let ns = setup.ns.name.clone();
    let health = eventually("health on the lease", Duration::from_secs(15), || {
        let ns = ns.clone();
        async move {
            let h = published_health(&ns).await.pop()?;
            (h["delivered"] == 2 && h["deadLettered"] == 2).then_some(h)
        }
    })
    .await;
    assert_eq!(health["worker"], "worker-1");
    assert!(
        health["lastDelivery"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(health.get("sinkError").is_none(), "{health}");
    stop(child).await;
    setup.ns.delete().await;
}

/// Open shards and their hash key ranges, in hash key order.
async fn open_shards(setup: &Setup) -> Vec<(String, u128, u128)> {
    let shards = setup
        .kinesis
        .list_shards()
        .stream_name(&setup.stream)
        .send()
        .await
        .expect("list shards")
        .shards
        .unwrap_or_default();
    let mut open: Vec<(String, u128, u128)> = shards
        .into_iter()
        .filter(|s| {
            s.sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_none())
        })
        .map(|s| {
            let range = s.hash_key_range().expect("hash key range");
            (
                s.shard_id().to_owned(),
                range.starting_hash_key().parse().expect("start"),
                range.ending_hash_key().parse().expect("end"),
            )
        })
        .collect();
    open.sort_by_key(|s| s.1);
    open
}

#[tokio::test]
async fn a_split_and_a_merge_under_load_deliver_every_event_once_parents_first() {
    let streams = ["r1", "r2", "r3", "r4", "r5", "r6"];
    let setup = std::sync::Arc::new(setup(2, &streams).await);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let child = worker(&setup.config, "worker-1", tx);

    // Load: every stream gets a numbered event every few milliseconds until told to stop.
    let (stop_load, mut stopped) = tokio::sync::watch::channel(false);
    let load = {
        let setup = setup.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut n = 0;
            while !*stopped.borrow() {
                for s in streams {
                    let batch: Vec<String> = (0..3).map(|i| format!("{s} {}", n + i)).collect();
                    put(&setup, s, &batch).await;
                    sent.extend(batch);
                }
                n += 3;
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            sent
        })
    };
    let mut docs = collect(&mut rx, 60).await;

    // Split the first shard in the middle of its range …
    let before = open_shards(&setup).await;
    let (first, start, end) = before[0].clone();
    setup
        .kinesis
        .split_shard()
        .stream_name(&setup.stream)
        .shard_to_split(&first)
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .expect("split");
    docs.extend(collect(&mut rx, 60).await);
    // … then merge its upper child with the old second shard: a child of two parents.
    let after_split = open_shards(&setup).await;
    assert_eq!(after_split.len(), 3, "{after_split:?}");
    setup
        .kinesis
        .merge_shards()
        .stream_name(&setup.stream)
        .shard_to_merge(&after_split[1].0)
        .adjacent_shard_to_merge(&after_split[2].0)
        .send()
        .await
        .expect("merge");
    docs.extend(collect(&mut rx, 60).await);
    stop_load.send(true).expect("stop the load");
    let sent = load.await.expect("load");

    // Everything arrives, each once.
    let want: HashSet<&str> = sent.iter().map(String::as_str).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let seen: HashSet<&str> = docs
            .iter()
            .map(|d| d["@message"].as_str().unwrap_or_default())
            .collect();
        if want.is_subset(&seen) {
            break;
        }
        let missing = want.difference(&seen).count();
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(d)) => docs.push(d.doc),
            _ => panic!("{missing} of {} events never arrived", sent.len()),
        }
    }
    // The closed shards are read to their end (a last read finds no more).
    let ns = setup.ns.name.clone();
    eventually(
        "two shards, two children and a merged one; three read to their end",
        Duration::from_secs(30),
        || {
            let ns = ns.clone();
            async move {
                let checkpoints = lease_checkpoints(&ns).await;
                let ended = checkpoints.iter().filter(|c| *c == "SHARD_END").count();
                (checkpoints.len() == 5 && ended == 3).then_some(())
            }
        },
    )
    .await;
    stop(child).await;
    while let Ok(d) = rx.try_recv() {
        docs.push(d.doc);
    }
    let got = messages(&docs);
    assert_eq!(got.len(), sent.len(), "no event twice");
    // A log stream's events go to one shard, then to its child: parents first
    // keeps each stream in order across the split and the merge.
    for s in streams {
        let prefix = format!("{s} ");
        let order: Vec<&String> = got.iter().filter(|m| m.starts_with(&prefix)).collect();
        let want: Vec<&String> = sent.iter().filter(|m| m.starts_with(&prefix)).collect();
        assert_eq!(order, want, "{s} in order");
    }
    let delivered: u64 = published_health(&setup.ns.name)
        .await
        .iter()
        .map(|h| h["delivered"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        delivered,
        sent.len() as u64,
        "the leases account for every document"
    );
    eprintln!(
        "split and merge under load: {} events, each once",
        sent.len()
    );
    let setup = std::sync::Arc::into_inner(setup).expect("the load task is done");
    setup.ns.delete().await;
}
