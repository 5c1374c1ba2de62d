//! The dashboards in `dashboards/` against what the worker writes: the sample
//! events go through CloudWatch Logs → Kinesis → `logsub worker` (with the three
//! parsing transforms and its index template) into each search node. Then every
//! field a visualization or query names must exist with a type its aggregation
//! can use, and every visualization, run as the search it stands for, must find
//! data.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::pipeline::{put, setup, stop, worker_with_admin};
use common::{eventually, repo, stack, unique};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const FILES: [&str; 2] = ["kibana-8.ndjson", "opensearch-dashboards-2.ndjson"];
const SAMPLES: [(&str, &str); 3] = [
    ("vpc", "vpc-flow-logs.log"),
    ("lambda", "lambda.log"),
    ("trail", "cloudtrail.log"),
];

/// A visualization, as the dashboards store it.
#[derive(Debug)]
struct Vis {
    title: String,
    query: String,
    aggs: Vec<Value>,
}

fn saved_objects(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("dashboards").join(file)).expect(file);
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect()
}

fn embedded(object: &Value, key: &str) -> Value {
    let text = object["attributes"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} of {}", object["id"]));
    serde_json::from_str(text).expect(key)
}

/// The visualizations of one file, after checking that every reference in it
/// resolves: dashboards to visualizations, visualizations to the data view.
fn visualizations(file: &str) -> Vec<Vis> {
    let objects = saved_objects(file);
    let ids: BTreeMap<&str, &str> = objects
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o["type"].as_str().unwrap()))
        .collect();
    let views: Vec<&Value> = objects
        .iter()
        .filter(|o| o["type"] == "index-pattern")
        .collect();
    assert_eq!(views.len(), 1, "{file}: one data view");
    assert_eq!(views[0]["attributes"]["timeFieldName"], "@timestamp");
    let mut panels = BTreeSet::new();
    for o in &objects {
        for r in o["references"].as_array().expect("references") {
            let id = r["id"].as_str().unwrap();
            assert_eq!(
                ids.get(id).copied(),
                r["type"].as_str(),
                "{file}: {} refers to {id}",
                o["id"]
            );
        }
        if o["type"] == "dashboard" {
            let refs = o["references"].as_array().unwrap();
            let placed = embedded(o, "panelsJSON");
            assert_eq!(placed.as_array().unwrap().len(), refs.len(), "{}", o["id"]);
            for p in placed.as_array().unwrap() {
                assert!(
                    refs.iter().any(|r| r["name"] == p["panelRefName"]),
                    "{file}: panel {p} has a reference"
                );
            }
            panels.extend(refs.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        }
    }
    let dashboards: Vec<&str> = objects
        .iter()
        .filter(|o| o["type"] == "dashboard")
        .map(|o| o["attributes"]["title"].as_str().unwrap())
        .collect();
    for kind in ["VPC Flow Logs", "Lambda", "CloudTrail"] {
        assert!(
            dashboards.iter().any(|t| t.contains(kind)),
            "{file}: a {kind} dashboard in {dashboards:?}"
        );
    }
    objects
        .iter()
        .filter(|o| o["type"] == "visualization")
        .map(|o| {
            assert!(
                panels.contains(o["id"].as_str().unwrap()),
                "{} on a dashboard",
                o["id"]
            );
            let state = embedded(o, "visState");
            let source: Value = serde_json::from_str(
                o["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            Vis {
                title: state["title"].as_str().unwrap().to_owned(),
                query: source["query"]["query"].as_str().unwrap().to_owned(),
                aggs: state["aggs"].as_array().unwrap().clone(),
            }
        })
        .collect()
}

/// The fields a query of the form `a:x`, `a:* or b:y` names.
fn query_fields(query: &str) -> Vec<&str> {
    query
        .split_whitespace()
        .filter_map(|term| term.split_once(':').map(|(field, _)| field))
        .collect()
}

/// The search a visualization stands for: its query, and its buckets nested in
/// order with its metrics inside the innermost one.
fn search_body(vis: &Vis) -> Value {
    let mut metrics = serde_json::Map::new();
    let mut buckets = Vec::new();
    for a in &vis.aggs {
        let field = &a["params"]["field"];
        let id = a["id"].as_str().unwrap().to_owned();
        match a["type"].as_str().unwrap() {
            "count" => {}
            "sum" | "avg" | "max" | "min" => {
                metrics.insert(id, json!({a["type"].as_str().unwrap(): {"field": field}}));
            }
            "terms" => buckets.push((id, json!({"terms": {"field": field, "size": 10}}))),
            "date_histogram" => buckets.push((
                id,
                json!({"date_histogram": {"field": field, "fixed_interval": "1h", "min_doc_count": 1}}),
            )),
            other => panic!("{}: aggregation {other} is not checked here", vis.title),
        }
    }
    let mut inner = Value::Object(metrics);
    for (id, mut bucket) in buckets.into_iter().rev() {
        if inner.as_object().is_some_and(|m| !m.is_empty()) {
            bucket["aggs"] = inner;
        }
        inner = json!({ id: bucket });
    }
    json!({
        "size": 0,
        "track_total_hits": true,
        "query": {"query_string": {"query": vis.query, "default_operator": "AND"}},
        "aggs": inner,
    })
}

/// Whether a field of these mapped types serves this aggregation.
fn usable(agg: &str, types: &BTreeSet<String>, aggregatable: bool) -> bool {
    const NUMERIC: [&str; 7] = [
        "long",
        "integer",
        "short",
        "float",
        "double",
        "half_float",
        "scaled_float",
    ];
    types.iter().all(|t| match agg {
        "date_histogram" => t == "date" || t == "date_nanos",
        "sum" | "avg" | "max" | "min" => NUMERIC.contains(&t.as_str()),
        "terms" => aggregatable,
        _ => false,
    })
}

async fn dashboards_fit_the_documents(base: &str) {
    let http = reqwest::Client::new();
    let setup = setup(1, &SAMPLES.map(|(stream, _)| stream)).await;
    let prefix = unique("cwl-dash").to_lowercase();
    setup.configure(
        &format!(
            "{{elasticsearch: {{endpoint: '{base}', index: '{prefix}-%Y.%m.%d', \
             indexTemplate: {{name: '{prefix}', shards: 1, replicas: 0}}}}}}"
        ),
        "[{vpcFlowLog: {}}, {lambda: {}}, {cloudTrail: {}}]",
    );
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, _admin) = worker_with_admin(&setup.config, "worker-1", tx);
    let mut expected = 0;
    for (stream, file) in SAMPLES {
        let text = std::fs::read_to_string(repo().join("dashboards/samples").join(file))
            .expect("sample events");
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        // CloudTrail's batched form (`{"Records": [...]}`) is one document a record.
        expected += lines
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v["Records"].as_array().map(Vec::len))
                    .unwrap_or(1)
            })
            .sum::<usize>();
        put(&setup, stream, &lines).await;
    }
    let pattern = format!("{prefix}-*");
    eventually(
        &format!("{expected} documents in {pattern}"),
        Duration::from_secs(60),
        || {
            let pattern = pattern.clone();
            async move { (common::search::count(base, &pattern).await == expected as u64).then_some(()) }
        },
    )
    .await;
    stop(child).await;

    let caps: Value = http
        .get(format!("{base}/{pattern}/_field_caps?fields=*"))
        .send()
        .await
        .expect("field caps")
        .json()
        .await
        .expect("field caps json");
    let field = |name: &str| -> Option<(BTreeSet<String>, bool)> {
        let types = caps["fields"][name].as_object()?;
        let aggregatable = types.values().all(|t| t["aggregatable"] == true);
        Some((types.keys().cloned().collect(), aggregatable))
    };
    let (time, _) = field("@timestamp").expect("@timestamp mapped");
    assert!(
        usable("date_histogram", &time, true),
        "@timestamp: {time:?}"
    );

    for file in FILES {
        let visualizations = visualizations(file);
        assert_eq!(visualizations.len(), 15, "{file}: five for each dashboard");
        for vis in &visualizations {
            for name in query_fields(&vis.query) {
                assert!(
                    field(name).is_some(),
                    "{file}: {} queries {name}, which no document has",
                    vis.title
                );
            }
            for a in &vis.aggs {
                let Some(name) = a["params"]["field"].as_str() else {
                    continue;
                };
                let kind = a["type"].as_str().unwrap();
                let (types, aggregatable) = field(name).unwrap_or_else(|| {
                    panic!("{file}: {} uses {name}, which no document has", vis.title)
                });
                assert!(
                    usable(kind, &types, aggregatable),
                    "{file}: {} runs {kind} on {name}, mapped as {types:?} (aggregatable: {aggregatable})",
                    vis.title
                );
            }
            let found = http
                .post(format!("{base}/{pattern}/_search"))
                .json(&search_body(vis))
                .send()
                .await
                .expect("search");
            let status = found.status();
            let found: Value = found.json().await.expect("search json");
            assert!(status.is_success(), "{}: {status} {found}", vis.title);
            let hits = found["hits"]["total"]["value"].as_u64().unwrap_or(0);
            assert!(hits > 0, "{file}: {} finds nothing: {found}", vis.title);
            let outer = found["aggregations"]
                .as_object()
                .and_then(|a| a.values().next())
                .expect("aggregations");
            assert!(
                outer["buckets"].as_array().is_some_and(|b| !b.is_empty()),
                "{file}: {} has no buckets: {found}",
                vis.title
            );
        }
    }
    setup.ns.delete().await;
}

#[test]
fn the_files_are_current() {
    let out = std::process::Command::new("python3")
        .arg(repo().join("dashboards/generate.py"))
        .arg("--check")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn opensearch() {
    dashboards_fit_the_documents(stack().var("OPENSEARCH_URL")).await;
}

#[tokio::test]
async fn opensearch3() {
    dashboards_fit_the_documents(stack().var("OPENSEARCH3_URL")).await;
}

#[tokio::test]
async fn elasticsearch() {
    dashboards_fit_the_documents(stack().var("ELASTICSEARCH_URL")).await;
}
