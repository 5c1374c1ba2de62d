//! CloudWatch Logs delivers to Kinesis in the real format, read with the Rust SDK
//! the worker uses; S3 checks signatures and round-trips objects.

mod common;

use std::io::Read;

use aws_sdk_cloudwatchlogs::types::{Distribution, InputLogEvent};
use aws_sdk_kinesis::types::ShardIteratorType;
use common::{active_stream, stack, unique};
use serde::Deserialize;

/// The CloudWatch Logs subscription payload, typed as AWS documents it: `id` is a
/// string, unknown fields are not expected.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Payload {
    message_type: String,
    owner: String,
    log_group: String,
    log_stream: String,
    subscription_filters: Vec<String>,
    log_events: Vec<Event>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Event {
    id: String,
    timestamp: i64,
    message: String,
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gzip payload");
    out
}

#[tokio::test]
async fn a_subscription_filter_delivers_gzip_json_to_kinesis() {
    let config = stack().aws().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);

    let (stream, arn) = active_stream(&kinesis, "logs", 1).await;

    let group = format!("/logsub/test/{}", unique("g"));
    logs.create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .expect("create group");
    logs.create_log_stream()
        .log_group_name(&group)
        .log_stream_name("app-1")
        .send()
        .await
        .expect("create stream");
    logs.put_subscription_filter()
        .log_group_name(&group)
        .filter_name("logsub-test")
        .filter_pattern("ERROR")
        .destination_arn(&arn)
        .role_arn("arn:aws:iam::123456789012:role/CWLtoKinesis")
        .distribution(Distribution::ByLogStream)
        .send()
        .await
        .expect("put subscription filter");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let events = [
        "ERROR disk full",
        "INFO all good",
        "ERROR timeout talking to db",
    ]
    .iter()
    .enumerate()
    .map(|(i, m)| {
        InputLogEvent::builder()
            .timestamp(now + i as i64)
            .message(*m)
            .build()
            .expect("event")
    })
    .collect::<Vec<_>>();
    logs.put_log_events()
        .log_group_name(&group)
        .log_stream_name("app-1")
        .set_log_events(Some(events))
        .send()
        .await
        .expect("put log events");

    let iterator = kinesis
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("iterator")
        .shard_iterator
        .expect("an iterator");
    let records = kinesis
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .expect("get records")
        .records;
    let payloads: Vec<Payload> = records
        .iter()
        .map(|r| {
            serde_json::from_slice(&gunzip(r.data.as_ref())).expect("the documented payload shape")
        })
        .collect();

    assert_eq!(
        payloads.len(),
        2,
        "a control message, then one data message: {payloads:?}"
    );
    let control = &payloads[0];
    assert_eq!(control.message_type, "CONTROL_MESSAGE");
    assert_eq!(control.owner, "CloudwatchLogs");
    assert_eq!(
        control.log_events[0].message,
        "CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."
    );

    let data = &payloads[1];
    assert_eq!(data.message_type, "DATA_MESSAGE");
    assert_eq!(data.owner, "123456789012");
    assert_eq!(data.log_group, group);
    assert_eq!(data.log_stream, "app-1");
    assert_eq!(data.subscription_filters, ["logsub-test"]);
    let messages: Vec<_> = data.log_events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        ["ERROR disk full", "ERROR timeout talking to db"],
        "the filter pattern applies"
    );
    for event in &data.log_events {
        assert_eq!(event.id.len(), 56, "{event:?}");
        assert!(event.id.bytes().all(|b| b.is_ascii_digit()), "{event:?}");
        assert!(event.timestamp >= now);
    }
    assert_eq!(data.log_events[0].timestamp, now);
}

#[tokio::test]
async fn s3_round_trips_signed_objects_and_rejects_a_wrong_secret() {
    let config = stack().aws().await;
    let s3_config = aws_sdk_s3::config::Builder::from(&config)
        .force_path_style(true)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(s3_config);
    let bucket = unique("logsub").to_lowercase();
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");

    let body = b"{\"@message\":\"hello\"}\n".repeat(100);
    let key = "logs/shardId-000000000000/1-100.json";
    s3.put_object()
        .bucket(&bucket)
        .key(key)
        .content_type("application/x-ndjson")
        .body(body.clone().into())
        .send()
        .await
        .expect("signed put");
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .expect("get");
    assert_eq!(got.content_type(), Some("application/x-ndjson"));
    let bytes = got.body.collect().await.expect("body").into_bytes();
    assert_eq!(bytes.as_ref(), body.as_slice());

    let wrong = aws_sdk_s3::config::Builder::from(&config)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            stack().var("AWS_ACCESS_KEY_ID"),
            "not-the-secret",
            None,
            None,
            "wrong",
        ))
        .build();
    let err = aws_sdk_s3::Client::from_conf(wrong)
        .put_object()
        .bucket(&bucket)
        .key("denied")
        .body(b"x".to_vec().into())
        .send()
        .await
        .expect_err("a wrong secret is refused");
    let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&err).map(str::to_owned);
    assert_eq!(code.as_deref(), Some("SignatureDoesNotMatch"), "{err:?}");
    let missing = s3.head_object().bucket(&bucket).key("denied").send().await;
    assert!(
        missing.is_err(),
        "nothing was written with the wrong secret"
    );
}

/// The SigV4 signer the search sink uses for Amazon OpenSearch Service, checked
/// by a real SigV4 verifier: the stack's S3 accepts what it signs with the right
/// secret and refuses it with a wrong one.
#[tokio::test]
async fn the_search_sinks_sigv4_signatures_verify() {
    use logsub::worker::sink::elasticsearch::sigv4::sign_at;

    let endpoint = stack().var("AWS_ENDPOINT_URL_S3").to_owned();
    let region = stack().var("AWS_REGION").to_owned();
    let http = reqwest::Client::new();
    let send = |secret: String| {
        let (http, endpoint, region) = (http.clone(), endpoint.clone(), region.clone());
        async move {
            let credentials = aws_credential_types::Credentials::new(
                stack().var("AWS_ACCESS_KEY_ID"),
                secret,
                None,
                None,
                "test",
            );
            let url = format!("{endpoint}/");
            let body = b"";
            let headers = sign_at(
                "GET",
                &url,
                &[],
                body,
                &credentials,
                &region,
                "s3",
                std::time::SystemTime::now(),
            )
            .expect("signed");
            let mut request = http.get(&url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send().await.expect("request").status()
        }
    };
    assert_eq!(
        send(stack().var("AWS_SECRET_ACCESS_KEY").to_owned()).await,
        200
    );
    assert_eq!(send("not-the-secret".to_owned()).await, 403);
}

/// The controller's view of CloudWatch Logs against the stack's moto: every
/// page of log groups, our filter put and read back as the plan compares it,
/// other filters left alone, the two-filter limit, and deleting twice.
#[tokio::test]
async fn the_controllers_log_groups_and_filters_round_trip() {
    use logsub::api::{Distribution, FilterState};
    use logsub::aws::logs::Filter;
    use logsub::aws::logs::Logs;
    use logsub::controller::error::filter_failure;
    use logsub::controller::plan::{Action, Earlier, filters};

    let config = stack().aws().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let client = aws_sdk_cloudwatchlogs::Client::new(&config);
    let logs = Logs::new(client.clone());
    let (_, arn) = active_stream(&kinesis, "filters", 1).await;
    let prefix = format!("/{}/", unique("groups"));
    // More than a page (DescribeLogGroups answers 50 at most).
    for i in 0..55 {
        client
            .create_log_group()
            .log_group_name(format!("{prefix}{i:02}"))
            .send()
            .await
            .expect("group");
    }
    let groups = logs.log_groups(Some(&prefix)).await.expect("log groups");
    assert_eq!(groups.len(), 55, "every page");

    // The name as the controller gives it: a `/` is allowed in filter names.
    let want = Filter {
        name: "logsub/ns/app".into(),
        pattern: "ERROR".into(),
        destination_arn: arn.clone(),
        role_arn: Some("arn:aws:iam::123456789012:role/CWLtoKinesis".into()),
        distribution: Some(Distribution::ByLogStream),
    };
    let first = format!("{prefix}00");
    let foreign = |name: &str| Filter {
        name: name.into(),
        pattern: String::new(),
        ..want.clone()
    };
    logs.put_filter(&first, &foreign("audit"))
        .await
        .expect("a foreign filter");
    logs.put_filter(&first, &want).await.expect("ours");
    logs.put_filter(&first, &want)
        .await
        .expect("again: idempotent");
    let group = logs.group(&first).await.expect("group");
    assert_eq!(group.filters.len(), 2, "{group:?}");
    assert_eq!(
        filters(
            &[group],
            |_| true,
            &want,
            Earlier {
                name: "logsub-ns-app",
                toward: &[]
            },
            &[]
        ),
        [Action::Keep {
            group: first.clone(),
            name: want.name.clone()
        }],
        "read back exactly as put"
    );

    let err = logs
        .put_filter(&first, &foreign("third"))
        .await
        .expect_err("two filters at most");
    assert_eq!(
        filter_failure(&err).state,
        FilterState::LimitExceeded,
        "{err}"
    );

    logs.delete_filter(&first, &want.name)
        .await
        .expect("delete");
    logs.delete_filter(&first, &want.name)
        .await
        .expect("deleting what is gone is fine");
    let left = logs.group(&first).await.expect("group");
    assert_eq!(
        left.filters
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["audit"],
        "the foreign filter stays"
    );
}
