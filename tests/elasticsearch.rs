//! The Elasticsearch/OpenSearch sink end to end, against both of the stack's
//! search nodes: CloudWatch Logs → Kinesis → `logsub worker` → `_bulk`.

mod common;

use std::time::Duration;

use common::pipeline::{forget_checkpoints, metric, put, setup, stop, worker_with_admin};
use common::{eventually, stack, unique};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const VPC: [&str; 3] = [
    "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
    "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
    "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
];

/// The StartLogging event of the CloudTrail documentation, as CloudTrail writes
/// it to CloudWatch Logs (one event a log event).
const TRAIL: &str = r#"{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","principalId":"AIDAJDPLRKLG7UEXAMPLE","arn":"arn:aws:iam::123456789012:user/Mary_Major","accountId":"123456789012","userName":"Mary_Major"},"eventTime":"2026-11-20T10:00:00Z","eventSource":"cloudtrail.amazonaws.com","eventName":"StartLogging","awsRegion":"us-east-2","sourceIPAddress":"203.0.113.64","userAgent":"signin.amazonaws.com","requestParameters":{"name":"arn:aws:cloudtrail:us-east-2:123456789012:trail/My-First-Trail"},"responseElements":null,"requestID":"ddf5140f-EXAMPLE","eventID":"7116c6c1-EXAMPLE","readOnly":false,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012"}"#;

/// A Node.js runtime line with a JSON body, and a cold start's REPORT line.
const LAMBDA: [&str; 2] = [
    "2026-11-25T19:44:28.711Z\tc5f4a0e1-6bc2-4365-b021-0ce6b2e64ab0\tINFO\t{\"order\": 42}",
    "REPORT RequestId: c5f4a0e1-6bc2-4365-b021-0ce6b2e64ab0\tDuration: 2.49 ms\tBilled Duration: 3 ms\tMemory Size: 128 MB\tMax Memory Used: 39 MB\tInit Duration: 139.25 ms",
];

async fn search(http: &reqwest::Client, base: &str, index: &str) -> Vec<Value> {
    let refreshed = http
        .post(format!(
            "{base}/{index}/_refresh?ignore_unavailable=true&allow_no_indices=true"
        ))
        .send()
        .await
        .expect("refresh");
    assert!(refreshed.status().is_success(), "refresh {index}");
    let found: Value = http
        .post(format!(
            "{base}/{index}/_search?ignore_unavailable=true&allow_no_indices=true"
        ))
        .json(&json!({"size": 100, "query": {"match_all": {}}}))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("search json");
    found["hits"]["hits"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Events of every kind land once, with their ids, in the index of their day;
/// a document the mapping refuses and a record that is no payload go to the
/// dead-letter index and the stream goes on; a replay of the whole stream adds
/// nothing.
async fn delivers_once_with_dead_letters(base: &str) {
    let http = reqwest::Client::new();
    let setup = setup(1, &["vpc", "app", "trail", "lambda"]).await;
    let prefix = unique("cwl").to_lowercase();
    let dead = format!("dead-{prefix}");
    // Indices of the subscription: no replicas (one node), and `n` a number.
    let template = http
        .put(format!("{base}/_index_template/{prefix}"))
        .json(&json!({
            "index_patterns": [format!("{prefix}-*"), dead],
            "template": {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {"properties": {"n": {"type": "long"}}},
            },
        }))
        .send()
        .await
        .expect("index template");
    assert!(
        template.status().is_success(),
        "{}",
        template.text().await.unwrap_or_default()
    );
    setup.configure(
        &format!(
            "{{elasticsearch: {{endpoint: '{base}', index: '{prefix}-%Y.%m.%d', deadLetterIndex: '{dead}'}}}}"
        ),
        "[{vpcFlowLog: {}}, {lambda: {}}, {cloudTrail: {}}, {json: {}}]",
    );
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, admin) = worker_with_admin(&setup.config, "worker-1", tx);
    put(&setup, "trail", &[TRAIL.to_owned()]).await;
    put(&setup, "lambda", &LAMBDA.map(str::to_owned)).await;
    let vpc: Vec<String> = VPC.iter().map(|s| (*s).to_owned()).collect();
    put(&setup, "vpc", &vpc).await;
    let app = [
        r#"{"n": 1, "user": "ann"}"#,
        r#"{"n": "many", "user": "bob"}"#,
        r#"{"n": 3, "user": "cid"}"#,
        // Pretty-printed: its line breaks must not break the bulk body's lines.
        "{\n  \"n\": 4,\n  \"user\": \"dee\",\n  \"ctx\": {\r\n    \"tags\": [\"a\",\n      \"b\"]\n  }\n}",
    ]
    .map(str::to_owned);
    put(&setup, "app", &app).await;
    // A record that is no CloudWatch Logs payload: its dead letter goes to the
    // dead-letter index too, never among the documents.
    setup
        .kinesis
        .put_record()
        .stream_name(&setup.stream)
        .partition_key("raw")
        .data(aws_sdk_kinesis::primitives::Blob::new(&b"not gzip"[..]))
        .send()
        .await
        .expect("put a raw record");

    let pattern = format!("{prefix}-*");
    let docs = eventually("9 documents indexed", Duration::from_secs(60), || {
        let (http, pattern) = (http.clone(), pattern.clone());
        async move {
            let docs = search(&http, base, &pattern).await;
            (docs.len() >= 9).then_some(docs)
        }
    })
    .await;
    assert_eq!(docs.len(), 9, "{docs:#?}");
    for hit in &docs {
        let source = &hit["_source"];
        assert_eq!(hit["_id"], source["@id"], "_id is the event id");
        let day = source["@timestamp"].as_str().expect("@timestamp")[..10].replace('-', ".");
        assert_eq!(
            hit["_index"],
            format!("{prefix}-{day}"),
            "the index of its day"
        );
        assert_eq!(source["@log_group"], setup.group.as_str());
    }
    let by_stream = |s: &str| {
        docs.iter()
            .map(|h| &h["_source"])
            .filter(|d| d["@log_stream"] == s)
            .cloned()
            .collect::<Vec<_>>()
    };
    let flows = by_stream("vpc");
    assert_eq!(flows.len(), 3);
    assert!(
        flows
            .iter()
            .any(|d| d["dstport"] == 3389 && d["action"] == "REJECT")
    );
    assert!(
        flows
            .iter()
            .any(|d| d["log_status"] == "NODATA" && d.get("srcaddr").is_none())
    );
    // A CloudTrail event lands in the index of its eventTime, in UTC milliseconds.
    let trail = by_stream("trail");
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0]["eventName"], "StartLogging");
    assert_eq!(trail[0]["@timestamp"], "2026-11-20T10:00:00.000Z");
    assert_eq!(trail[0]["userIdentity"]["userName"], "Mary_Major");
    let lambda = by_stream("lambda");
    assert_eq!(lambda.len(), 2);
    assert!(lambda.iter().any(|d| d["lambda"]["type"] == "REPORT"
        && d["lambda"]["billed_duration_ms"] == 3
        && d["lambda"]["cold_start"] == true));
    assert!(
        lambda
            .iter()
            .any(|d| d["level"] == "INFO" && d["order"] == 42)
    );
    let app = by_stream("app");
    let mut users: Vec<&str> = app.iter().filter_map(|d| d["user"].as_str()).collect();
    users.sort_unstable();
    assert_eq!(
        users,
        ["ann", "cid", "dee"],
        "bob's document broke the mapping"
    );
    let dee = app.iter().find(|d| d["user"] == "dee").expect("dee");
    assert_eq!(dee["ctx"], json!({"tags": ["a", "b"]}));

    let letters = eventually("the dead letters", Duration::from_secs(30), || {
        let (http, dead) = (http.clone(), dead.clone());
        async move {
            let letters = search(&http, base, &dead).await;
            (letters.len() >= 2).then_some(letters)
        }
    })
    .await;
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let reason = |hit: &Value| {
        hit["_source"]["@dead_letter"]["reason"]
            .as_str()
            .map(str::to_owned)
    };
    let record = letters
        .iter()
        .find(|l| reason(l).as_deref() == Some("not_gzip"))
        .expect("the undecodable record's dead letter, in the dead-letter index");
    assert_eq!(
        record["_source"]["@dead_letter"]["data_base64"], "bm90IGd6aXA=",
        "{record}"
    );
    let refused = letters
        .iter()
        .find(|l| reason(l).as_deref() == Some("refused"))
        .expect("bob's dead letter");
    let source = &refused["_source"];
    let letter = &source["@dead_letter"];
    assert!(
        matches!(
            letter["error_type"].as_str(),
            Some("mapper_parsing_exception" | "document_parsing_exception")
        ),
        "{letter}"
    );
    assert_eq!(letter["status"], 400);
    assert_eq!(letter["shard_id"], "shardId-000000000000");
    assert!(letter["sequence_number"].as_str().is_some());
    assert!(
        letter["index"]
            .as_str()
            .is_some_and(|i| i.starts_with(&prefix))
    );
    let original: Value =
        serde_json::from_str(letter["document"].as_str().expect("document")).expect("JSON");
    assert_eq!(original["user"], "bob");
    assert_eq!(refused["_id"], original["@id"]);
    assert_eq!(source["@id"], original["@id"]);
    assert_eq!(
        source["@timestamp"], original["@timestamp"],
        "at the event's time"
    );
    assert_eq!(source["@log_group"], original["@log_group"]);
    eventually("counted", Duration::from_secs(10), || async {
        let sent = metric(admin, "component_sent_events_total").await?;
        let dead = metric(admin, "logsub_worker_sink_dead_lettered_events_total").await?;
        (sent == 10.0 && dead == 1.0).then_some(())
    })
    .await;
    stop(child).await;

    // Forget the checkpoints: the next worker reads the whole stream again.
    forget_checkpoints(&setup.ns.name).await;
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (again, admin) = worker_with_admin(&setup.config, "worker-2", tx);
    eventually("the replay delivered", Duration::from_secs(60), || async {
        let sent = metric(admin, "component_sent_events_total").await?;
        let dead = metric(admin, "logsub_worker_sink_dead_lettered_events_total").await?;
        (sent == 10.0 && dead == 1.0).then_some(())
    })
    .await;
    stop(again).await;
    assert_eq!(
        search(&http, base, &pattern).await.len(),
        9,
        "the replay added nothing"
    );
    assert_eq!(
        search(&http, base, &dead).await.len(),
        2,
        "nor dead letters"
    );
    setup.ns.delete().await;
}

#[tokio::test]
async fn opensearch() {
    delivers_once_with_dead_letters(stack().var("OPENSEARCH_URL")).await;
}

#[tokio::test]
async fn opensearch3() {
    delivers_once_with_dead_letters(stack().var("OPENSEARCH3_URL")).await;
}

#[tokio::test]
async fn elasticsearch() {
    delivers_once_with_dead_letters(stack().var("ELASTICSEARCH_URL")).await;
}

/// A data stream, with the index template the worker installs for it.
async fn delivers_to_a_data_stream(base: &str) {
    let http = reqwest::Client::new();
    let setup = setup(1, &["app"]).await;
    let name = unique("logs").to_lowercase();
    let stream = format!("{name}-default");
    // The template as an earlier release named it, edited since (`team`):
    // renamed, edits kept, as two templates of one priority cannot cover
    // the same indices.
    let earlier = format!("{name}-earlier");
    let keyword = json!({"type": "keyword"});
    let earlier_put = http
        .put(format!("{base}/_index_template/{earlier}"))
        .json(&json!({
            "index_patterns": [stream],
            "priority": 200,
            "data_stream": {},
            "template": {"mappings": {"properties": {"@log_group": keyword, "team": keyword}}},
            "_meta": {"managed_by": "logsub"},
        }))
        .send()
        .await
        .expect("the earlier template");
    assert!(earlier_put.status().is_success(), "{earlier_put:?}");
    setup.configure(
        &format!(
            "{{elasticsearch: {{endpoint: '{base}', dataStream: '{stream}', \
             indexTemplate: {{name: '{name}', replaces: '{earlier}', shards: 1, replicas: 0}}}}}}"
        ),
        "[{json: {}}]",
    );
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, _admin) = worker_with_admin(&setup.config, "worker-1", tx);
    let messages =
        [r#"{"level": "info"}"#, r#"{"level": "warn"}"#, "plain text"].map(str::to_owned);
    put(&setup, "app", &messages).await;
    let docs = eventually(
        "3 documents in the data stream",
        Duration::from_secs(60),
        || {
            let (http, stream) = (http.clone(), stream.clone());
            async move {
                let docs = search(&http, base, &stream).await;
                (docs.len() >= 3).then_some(docs)
            }
        },
    )
    .await;
    assert_eq!(docs.len(), 3);
    for hit in &docs {
        assert!(
            hit["_index"]
                .as_str()
                .is_some_and(|i| i.starts_with(".ds-")),
            "a backing index: {hit}"
        );
        assert_eq!(hit["_id"], hit["_source"]["@id"]);
    }
    let template: Value = http
        .get(format!("{base}/_index_template/{name}"))
        .send()
        .await
        .expect("template")
        .json()
        .await
        .expect("template json");
    let installed = &template["index_templates"][0]["index_template"];
    assert_eq!(installed["index_patterns"], json!([stream]));
    assert!(installed["data_stream"].is_object(), "{template}");
    let properties = &installed["template"]["mappings"]["properties"];
    assert_eq!(properties["@log_group"]["type"], "keyword");
    assert_eq!(properties["team"]["type"], "keyword", "the edit is kept");
    assert_eq!(installed["priority"], 200);
    let gone = http
        .get(format!("{base}/_index_template/{earlier}"))
        .send()
        .await
        .expect("the earlier template");
    assert_eq!(gone.status(), 404, "the earlier template is replaced");
    stop(child).await;
    setup.ns.delete().await;
}

#[tokio::test]
async fn opensearch_data_stream() {
    delivers_to_a_data_stream(stack().var("OPENSEARCH_URL")).await;
}

#[tokio::test]
async fn opensearch3_data_stream() {
    delivers_to_a_data_stream(stack().var("OPENSEARCH3_URL")).await;
}

#[tokio::test]
async fn elasticsearch_data_stream() {
    delivers_to_a_data_stream(stack().var("ELASTICSEARCH_URL")).await;
}
