//! Scenarios for unit tests of the whole reconcile, in the manner of kube-rs's
//! controller-rs: a mocked API server that expects the requests a scenario
//! names, in order, and answers each as the scenario says; and a fake AWS
//! layer, the SDK clients answered from an in-memory account (streams and
//! log groups with their filters) through the SDK's own mock interceptor.
//! Events are answered and collected apart, since when they are published is
//! not what a scenario is about.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudwatchlogs as cwl;
use aws_sdk_kinesis as kinesis;
use aws_sdk_kinesis::error::ErrorMetadata;
use aws_smithy_mocks::{MockResponse, MockResponseInterceptor, RuleMode, mock};
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use super::reconcile::reconcile;
use super::tenancy::{Namespaces, Tenancy};
use super::{Aws, Context, Memory, Settings};
use crate::api::{LogSubscription, LogSubscriptionPolicy, LogSubscriptionStatus};
use crate::aws::CallCounter;
use crate::telemetry::ControllerMetrics;

/// The region of the fake account.
pub const REGION: &str = "us-east-1";
/// The fake account.
pub const ACCOUNT: &str = "123456789012";

// ---------------------------------------------------------------- API server

/// How an expected request is answered: a status code and a body, from the
/// request's body.
type Answer = Box<dyn FnOnce(&Value) -> (u16, Value) + Send>;

/// One request the scenario expects, and its answer.
pub struct Expect {
    method: Method,
    path: String,
    answer: Answer,
}

impl Expect {
    /// `method` on `path` (without its query), answered by `answer`.
    pub fn new(
        method: Method,
        path: impl Into<String>,
        answer: impl FnOnce(&Value) -> (u16, Value) + Send + 'static,
    ) -> Expect {
        Expect {
            method,
            path: path.into(),
            answer: Box::new(answer),
        }
    }

    /// A GET of an object that does not exist.
    pub fn missing(path: impl Into<String>) -> Expect {
        Expect::new(Method::GET, path, |_| (404, not_found()))
    }

    /// A GET answered with `object`.
    pub fn get(path: impl Into<String>, object: Value) -> Expect {
        Expect::new(Method::GET, path, move |_| (200, object))
    }

    /// A server-side apply, answered with what was applied.
    pub fn apply(path: impl Into<String>) -> Expect {
        Expect::new(Method::PATCH, path, |body| (200, body.clone()))
    }

    /// A list answered with no items.
    pub fn empty_list(path: impl Into<String>, kind: &str) -> Expect {
        let kind = kind.to_owned();
        Expect::new(Method::GET, path, move |_| {
            (200, json!({"kind": kind, "metadata": {}, "items": []}))
        })
    }
}

/// What the API server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every request but Events: method, path and body.
    pub requests: Vec<(Method, String, Value)>,
    /// The reasons of the Events published.
    pub events: Vec<String>,
    /// Requests the scenario did not expect (answered 500).
    pub unexpected: Vec<String>,
}

impl Seen {
    /// The bodies of the requests `method` on `path`.
    pub fn bodies(&self, method: &Method, path: &str) -> Vec<&Value> {
        self.requests
            .iter()
            .filter(|(m, p, _)| m == method && p == path)
            .map(|(_, _, b)| b)
            .collect()
    }
}

/// The mocked API server of one scenario.
pub struct ApiServer {
    script: Arc<Mutex<VecDeque<Expect>>>,
    seen: Arc<Mutex<Seen>>,
}

impl ApiServer {
    /// A client, and the server that answers it.
    pub fn start() -> (kube::Client, ApiServer) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let server = ApiServer {
            script: Arc::default(),
            seen: Arc::default(),
        };
        let (script, record) = (server.script.clone(), server.seen.clone());
        tokio::spawn(async move {
            while let Some((request, reply)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (code, answer) = if path.contains("/events") {
                    let reason = body["reason"].as_str().unwrap_or_default().to_owned();
                    record.lock().unwrap().events.push(reason);
                    (201, body)
                } else {
                    let mut seen = record.lock().unwrap();
                    seen.requests
                        .push((method.clone(), path.clone(), body.clone()));
                    let mut script = script.lock().unwrap();
                    match script.front() {
                        Some(e) if e.method == method && e.path == path => {
                            let e = script.pop_front().expect("front");
                            (e.answer)(&body)
                        }
                        next => {
                            let wanted = next.map(|e| format!("{} {}", e.method, e.path));
                            seen.unexpected.push(format!(
                                "{method} {path} (expected {})",
                                wanted.as_deref().unwrap_or("nothing more")
                            ));
                            let status =
                                json!({"kind": "Status", "code": 500, "message": "unexpected"});
                            (500, status)
                        }
                    }
                };
                reply.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                        .expect("response"),
                );
            }
        });
        (client, server)
    }

    /// The requests expected next, in order.
    pub fn expect(&self, steps: Vec<Expect>) {
        self.script.lock().unwrap().extend(steps);
    }

    /// What was seen since the last time; fails unless every expected
    /// request came and no other did.
    pub fn verify(&self) -> Seen {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        let left: Vec<String> = self
            .script
            .lock()
            .unwrap()
            .drain(..)
            .map(|e| format!("{} {}", e.method, e.path))
            .collect();
        assert!(
            seen.unexpected.is_empty() && left.is_empty(),
            "unexpected requests: {:#?}\nexpected but not made: {left:#?}\nall: {:#?}",
            seen.unexpected,
            seen.requests
                .iter()
                .map(|(m, p, _)| format!("{m} {p}"))
                .collect::<Vec<_>>()
        );
        seen
    }
}

/// A 404 Status.
pub fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

// ---------------------------------------------------------------- AWS

/// A stream of the fake account.
#[derive(Clone, Debug)]
pub struct FakeStream {
    /// Its ARN.
    pub arn: String,
    /// ACTIVE, CREATING…
    pub status: kinesis::types::StreamStatus,
    /// Open shards.
    pub shards: i32,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// A subscription filter of the fake account.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeFilter {
    /// Its name.
    pub name: String,
    /// Where it sends.
    pub destination: String,
}

/// The fake account: what it holds, and each call made to it.
#[derive(Debug, Default)]
pub struct Account {
    /// Streams by name.
    pub streams: BTreeMap<String, FakeStream>,
    /// Log groups by name, with their filters.
    pub groups: BTreeMap<String, Vec<FakeFilter>>,
    /// Each operation called, by name, in order.
    pub calls: Vec<String>,
    /// Each operation called with the region it was sent to, in order.
    pub regions: Vec<(String, String)>,
    /// Failures to answer instead of the account's state.
    pub faults: Vec<Fault>,
}

/// An injected failure: `op` (on `target` when set: a log group or a
/// stream's name or ARN) answers `code`, `times` more times.
#[derive(Clone, Debug)]
pub struct Fault {
    /// The operation, e.g. `PutSubscriptionFilter`.
    pub op: String,
    /// The log group or stream it is limited to.
    pub target: Option<String>,
    /// The error code answered.
    pub code: String,
    /// How many more calls fail.
    pub times: usize,
}

impl Account {
    /// The error `op` on `target` answers now, if a fault says so.
    fn fault(&mut self, op: &str, target: Option<&str>) -> Option<ErrorMetadata> {
        let fault = self.faults.iter_mut().find(|f| {
            f.times > 0 && f.op == op && (f.target.is_none() || f.target.as_deref() == target)
        })?;
        fault.times -= 1;
        Some(error_meta(&fault.code))
    }
}

/// An in-memory AWS account the SDK clients are answered from.
#[derive(Clone, Default)]
pub struct FakeAws(pub Arc<Mutex<Account>>);

fn error_meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message(format!("{code} (fake)"))
        .build()
}

impl FakeAws {
    /// An ACTIVE stream `name` with `shards` shards; its ARN.
    pub fn stream(&self, name: &str, shards: i32) -> String {
        let arn = format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}");
        self.0.lock().unwrap().streams.insert(
            name.to_owned(),
            FakeStream {
                arn: arn.clone(),
                status: kinesis::types::StreamStatus::Active,
                shards,
                tags: BTreeMap::new(),
            },
        );
        arn
    }

    /// A log group with `filters` (name, destination).
    pub fn group(&self, name: &str, filters: &[(&str, &str)]) {
        self.0.lock().unwrap().groups.insert(
            name.to_owned(),
            filters
                .iter()
                .map(|(n, d)| FakeFilter {
                    name: (*n).to_owned(),
                    destination: (*d).to_owned(),
                })
                .collect(),
        );
    }

    /// The filters on `group`.
    pub fn filters(&self, group: &str) -> Vec<FakeFilter> {
        self.0
            .lock()
            .unwrap()
            .groups
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// From now on `op` (on `target` only, when set) fails with `code`
    /// `times` times.
    pub fn fail(&self, op: &str, target: Option<&str>, code: &str, times: usize) {
        self.0.lock().unwrap().faults.push(Fault {
            op: op.to_owned(),
            target: target.map(str::to_owned),
            code: code.to_owned(),
            times,
        });
    }

    /// The operations called in `region` so far.
    pub fn calls_in(&self, region: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .regions
            .iter()
            .filter(|(_, r)| r == region)
            .map(|(op, _)| op.clone())
            .collect()
    }

    /// An interceptor that records the region of every call.
    pub fn region_log(&self) -> SharedInterceptor {
        SharedInterceptor::new(RegionLog(self.0.clone()))
    }

    /// The calls made so far, and forgets them.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap().calls)
    }

    /// The interceptor that answers every CloudWatch Logs and Kinesis call
    /// the controller makes from the account.
    pub fn interceptor(&self) -> SharedInterceptor {
        let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        for rule in self.rules() {
            interceptor = interceptor.with_rule(&rule);
        }
        SharedInterceptor::new(interceptor)
    }

    fn rules(&self) -> Vec<aws_smithy_mocks::Rule> {
        let account = &self.0;
        let with = |op: &'static str| {
            let account = account.clone();
            move || {
                let mut a = account.lock().unwrap();
                a.calls.push(op.to_owned());
                drop(a);
                account.clone()
            }
        };
        let describe = with("DescribeStreamSummary");
        let tags = with("ListTagsForStream");
        let create = with("CreateStream");
        let groups = with("DescribeLogGroups");
        let filters = with("DescribeSubscriptionFilters");
        let put = with("PutSubscriptionFilter");
        let delete = with("DeleteSubscriptionFilter");
        vec![
            mock!(kinesis::Client::describe_stream_summary).then_compute_response(move |req| {
                let account = describe();
                let mut a = account.lock().unwrap();
                if let Some(meta) = a.fault("DescribeStreamSummary", req.stream_name().or(req.stream_arn())) {
                    return MockResponse::Error(
                        kinesis::operation::describe_stream_summary::DescribeStreamSummaryError::generic(meta),
                    );
                }
                let found = a.streams.iter().find(|(name, s)| {
                    req.stream_name() == Some(name.as_str()) || req.stream_arn() == Some(&s.arn)
                });
                match found {
                    None => MockResponse::Error(
                        kinesis::operation::describe_stream_summary::DescribeStreamSummaryError::ResourceNotFoundException(
                            kinesis::types::error::ResourceNotFoundException::builder()
                                .meta(error_meta("ResourceNotFoundException"))
                                .build(),
                        ),
                    ),
                    Some((name, s)) => MockResponse::Output(
                        kinesis::operation::describe_stream_summary::DescribeStreamSummaryOutput::builder()
                            .stream_description_summary(
                                kinesis::types::StreamDescriptionSummary::builder()
                                    .stream_name(name)
                                    .stream_arn(&s.arn)
                                    .stream_status(s.status.clone())
                                    .open_shard_count(s.shards)
                                    .retention_period_hours(24)
                                    .set_enhanced_monitoring(Some(Vec::new()))
                                    .stream_creation_timestamp(kinesis::primitives::DateTime::from_secs(1_700_000_000))
                                    .build()
                                    .expect("summary"),
                            )
                            .build(),
                    ),
                }
            }),
            mock!(kinesis::Client::list_tags_for_stream).then_compute_response(move |req| {
                let account = tags();
                let mut a = account.lock().unwrap();
                if let Some(meta) = a.fault("ListTagsForStream", req.stream_arn()) {
                    return MockResponse::Error(
                        kinesis::operation::list_tags_for_stream::ListTagsForStreamError::generic(meta),
                    );
                }
                let tags = a
                    .streams
                    .values()
                    .find(|s| req.stream_arn() == Some(&s.arn))
                    .map(|s| s.tags.clone())
                    .unwrap_or_default();
                MockResponse::Output(kinesis::operation::list_tags_for_stream::ListTagsForStreamOutput::builder()
                    .set_tags(Some(
                        tags.iter()
                            .map(|(k, v)| kinesis::types::Tag::builder().key(k).value(v).build().expect("tag"))
                            .collect(),
                    ))
                    .has_more_tags(false)
                    .build()
                    .expect("tags"))
            }),
            mock!(kinesis::Client::create_stream).then_compute_output(move |req| {
                let account = create();
                let mut a = account.lock().unwrap();
                let name = req.stream_name().unwrap_or_default().to_owned();
                a.streams.insert(
                    name.clone(),
                    FakeStream {
                        arn: format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"),
                        status: kinesis::types::StreamStatus::Creating,
                        shards: req.shard_count().unwrap_or(4),
                        tags: req.tags().cloned().unwrap_or_default().into_iter().collect(),
                    },
                );
                kinesis::operation::create_stream::CreateStreamOutput::builder().build()
            }),
            mock!(cwl::Client::describe_log_groups).then_compute_response(move |req| {
                let account = groups();
                let mut a = account.lock().unwrap();
                let prefix = req.log_group_name_prefix().unwrap_or_default();
                if let Some(meta) = a.fault("DescribeLogGroups", None) {
                    return MockResponse::Error(
                        cwl::operation::describe_log_groups::DescribeLogGroupsError::generic(meta),
                    );
                }
                MockResponse::Output(cwl::operation::describe_log_groups::DescribeLogGroupsOutput::builder()
                    .set_log_groups(Some(
                        a.groups
                            .keys()
                            .filter(|n| n.starts_with(prefix))
                            .map(|n| cwl::types::LogGroup::builder().log_group_name(n).build())
                            .collect(),
                    ))
                    .build())
            }),
            mock!(cwl::Client::describe_subscription_filters).then_compute_response(move |req| {
                let account = filters();
                let mut a = account.lock().unwrap();
                if let Some(meta) = a.fault("DescribeSubscriptionFilters", req.log_group_name()) {
                    return MockResponse::Error(
                        cwl::operation::describe_subscription_filters::DescribeSubscriptionFiltersError::generic(meta),
                    );
                }
                match a.groups.get(req.log_group_name().unwrap_or_default()) {
                    None => MockResponse::Error(
                        cwl::operation::describe_subscription_filters::DescribeSubscriptionFiltersError::ResourceNotFoundException(
                            cwl::types::error::ResourceNotFoundException::builder()
                                .meta(error_meta("ResourceNotFoundException"))
                                .build(),
                        ),
                    ),
                    Some(filters) => MockResponse::Output(
                        cwl::operation::describe_subscription_filters::DescribeSubscriptionFiltersOutput::builder()
                            .set_subscription_filters(Some(
                                filters
                                    .iter()
                                    .map(|f| {
                                        cwl::types::SubscriptionFilter::builder()
                                            .filter_name(&f.name)
                                            .destination_arn(&f.destination)
                                            .filter_pattern("")
                                            .build()
                                    })
                                    .collect(),
                            ))
                            .build(),
                    ),
                }
            }),
            mock!(cwl::Client::put_subscription_filter).then_compute_response(move |req| {
                let account = put();
                let mut a = account.lock().unwrap();
                if let Some(meta) = a.fault("PutSubscriptionFilter", req.log_group_name()) {
                    return MockResponse::Error(
                        cwl::operation::put_subscription_filter::PutSubscriptionFilterError::generic(meta),
                    );
                }
                let name = req.filter_name().unwrap_or_default().to_owned();
                let destination = req.destination_arn().unwrap_or_default().to_owned();
                let Some(filters) = a.groups.get_mut(req.log_group_name().unwrap_or_default()) else {
                    return MockResponse::Error(
                        cwl::operation::put_subscription_filter::PutSubscriptionFilterError::ResourceNotFoundException(
                            cwl::types::error::ResourceNotFoundException::builder()
                                .meta(error_meta("ResourceNotFoundException"))
                                .build(),
                        ),
                    );
                };
                let full = filters.len() >= 2;
                match filters.iter_mut().find(|f| f.name == name) {
                    Some(f) => f.destination = destination,
                    None if full => {
                        return MockResponse::Error(
                            cwl::operation::put_subscription_filter::PutSubscriptionFilterError::LimitExceededException(
                                cwl::types::error::LimitExceededException::builder()
                                    .meta(error_meta("LimitExceededException"))
                                    .build(),
                            ),
                        );
                    }
                    None => filters.push(FakeFilter { name, destination }),
                }
                MockResponse::Output(
                    cwl::operation::put_subscription_filter::PutSubscriptionFilterOutput::builder().build(),
                )
            }),
            mock!(cwl::Client::delete_subscription_filter).then_compute_response(move |req| {
                let account = delete();
                let mut a = account.lock().unwrap();
                if let Some(meta) = a.fault("DeleteSubscriptionFilter", req.log_group_name()) {
                    return MockResponse::Error(
                        cwl::operation::delete_subscription_filter::DeleteSubscriptionFilterError::generic(meta),
                    );
                }
                if let Some(filters) = a.groups.get_mut(req.log_group_name().unwrap_or_default()) {
                    filters.retain(|f| Some(f.name.as_str()) != req.filter_name());
                }
                MockResponse::Output(cwl::operation::delete_subscription_filter::DeleteSubscriptionFilterOutput::builder().build())
            }),
        ]
    }
}

/// Records the region each call is sent to.
#[derive(Debug)]
struct RegionLog(Arc<Mutex<Account>>);

impl aws_smithy_runtime_api::client::interceptors::Intercept for RegionLog {
    fn name(&self) -> &'static str {
        "RegionLog"
    }

    fn read_before_execution(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut kinesis::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let input = context.input();
        macro_rules! op_of {
            ($($op:literal => $input:ty),* $(,)?) => {
                [$((input.downcast_ref::<$input>().is_some(), $op)),*]
                    .into_iter()
                    .find(|(is, _)| *is)
                    .map_or("", |(_, op)| op)
                    .to_owned()
            };
        }
        let op = op_of!(
            "DescribeStreamSummary" => kinesis::operation::describe_stream_summary::DescribeStreamSummaryInput,
            "ListTagsForStream" => kinesis::operation::list_tags_for_stream::ListTagsForStreamInput,
            "CreateStream" => kinesis::operation::create_stream::CreateStreamInput,
            "DescribeLogGroups" => cwl::operation::describe_log_groups::DescribeLogGroupsInput,
            "DescribeSubscriptionFilters" => cwl::operation::describe_subscription_filters::DescribeSubscriptionFiltersInput,
            "PutSubscriptionFilter" => cwl::operation::put_subscription_filter::PutSubscriptionFilterInput,
            "DeleteSubscriptionFilter" => cwl::operation::delete_subscription_filter::DeleteSubscriptionFilterInput,
        );
        let region = cfg
            .load::<aws_config::Region>()
            .map(|r| r.to_string())
            .unwrap_or_default();
        self.0.lock().unwrap().regions.push((op, region));
        Ok(())
    }
}

// ---------------------------------------------------------------- context

/// The policies a test context authorizes against, changed as a watch would.
pub struct Policies(reflector::store::Writer<LogSubscriptionPolicy>);

impl Policies {
    /// From now on, exactly `policies` exist.
    pub fn set(&mut self, policies: Vec<LogSubscriptionPolicy>) {
        self.0.apply_watcher_event(&Event::Init);
        for policy in policies {
            self.0.apply_watcher_event(&Event::InitApply(policy));
        }
        self.0.apply_watcher_event(&Event::InitDone);
    }
}

/// The LogSubscriptions in a test context's cache, changed as a watch would.
pub struct Subscriptions(reflector::store::Writer<LogSubscription>);

impl Subscriptions {
    /// From now on, exactly `subscriptions` exist (besides, unseen, the one reconciled).
    pub fn set(&mut self, subscriptions: &[&LogSubscription]) {
        self.0.apply_watcher_event(&Event::Init);
        for lsub in subscriptions {
            self.0
                .apply_watcher_event(&Event::InitApply((*lsub).clone()));
        }
        self.0.apply_watcher_event(&Event::InitDone);
    }
}

/// What fills a test context's caches of the workers' objects.
pub type Owned = super::observe::OwnedWriters;

/// A controller context over `client` and `aws`, with `policies` and the
/// namespaces `namespaces` (name, labels) in its caches, and no other
/// LogSubscription and none of the workers' objects.
pub fn context(
    client: kube::Client,
    aws: &FakeAws,
    policies: Vec<LogSubscriptionPolicy>,
    namespaces: &[(&str, BTreeMap<String, String>)],
) -> (Arc<Context>, Policies, Subscriptions, Owned) {
    let (policy_store, policy_writer) = reflector::store();
    let mut writer = Policies(policy_writer);
    writer.set(policies);
    // The workers' objects are not watched until a test fills the caches
    // (`Scenario::cache_applied`); the Deployments' is empty and listed.
    let (owned, mut owned_writers) = super::observe::owned();
    owned_writers.deployments.apply_watcher_event(&Event::Init);
    owned_writers
        .deployments
        .apply_watcher_event(&Event::InitDone);
    let (subscription_store, subscription_writer) = reflector::store();
    let mut subscriptions = Subscriptions(subscription_writer);
    subscriptions.set(&[]);
    let (namespace_store, mut namespace_writer) = reflector::store();
    namespace_writer.apply_watcher_event(&Event::Init);
    for (name, labels) in namespaces {
        let mut meta =
            kube::api::PartialObjectMeta::<k8s_openapi::api::core::v1::Namespace>::default();
        meta.metadata.name = Some((*name).to_owned());
        meta.metadata.labels = Some(labels.clone());
        namespace_writer.apply_watcher_event(&Event::InitApply(meta));
    }
    namespace_writer.apply_watcher_event(&Event::InitDone);
    // Kept alive: the store of a dropped writer is never ready again.
    std::mem::forget(namespace_writer);

    let sdk = aws_config::SdkConfig::builder()
        .region(aws_config::Region::new(REGION))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::for_tests(),
            ),
        )
        .http_client(aws_smithy_mocks::create_mock_http_client())
        // A failure is answered once, as the controller sees it.
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let metrics = Arc::new(ControllerMetrics::default());
    let ctx = Arc::new(Context {
        aws: Aws::new(sdk, None, CallCounter(metrics.aws_calls.clone()))
            .intercepted_by(aws.interceptor())
            .intercepted_by(aws.region_log()),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "logsub-controller".into(),
                instance: None,
            },
        ),
        settings: Settings {
            image: "logsub:test".into(),
            worker_admin_addr: "127.0.0.1:8080".parse().expect("address"),
            region: Some(REGION.into()),
            aws_endpoint: None,
            resync: Duration::from_secs(300),
            status_interval: Duration::from_secs(10),
            namespace: None,
            selector: None,
            worker_role: "logsub-worker".into(),
            withdraw_grace: Duration::ZERO,
            concurrency: 4,
            identity: Some(k8s_openapi::api::rbac::v1::Subject {
                kind: "ServiceAccount".into(),
                name: "logsub".into(),
                namespace: Some("logsub-system".into()),
                ..Default::default()
            }),
        },
        client,
        metrics,
        memory: Memory::default(),
        owned,
        slots: Context::slots(4),
        tenancy: Tenancy::new(
            policy_store,
            Namespaces::Watched(namespace_store),
            subscription_store,
        ),
    });
    (ctx, writer, subscriptions, owned_writers)
}

/// A spec that subscribes every log group (`pattern "."`) into the existing
/// stream `shared`, delivering to the S3 bucket `bucket`.
pub fn into_shared(bucket: &str) -> Value {
    json!({
        "source": {
            "logGroups": {"pattern": "."},
            "roleArn": format!("arn:aws:iam::{ACCOUNT}:role/CWLtoKinesis"),
        },
        "stream": {"existing": {"name": "shared"}},
        "sink": {"s3": {"bucket": bucket}},
    })
}

/// A policy from its spec.
pub fn policy(name: &str, spec: Value) -> LogSubscriptionPolicy {
    serde_json::from_value(json!({
        "apiVersion": "logsub.io/v1alpha1",
        "kind": "LogSubscriptionPolicy",
        "metadata": {"name": name, "resourceVersion": "1"},
        "spec": spec,
    }))
    .expect("a LogSubscriptionPolicy")
}

// ---------------------------------------------------------------- scenarios

/// The paths of one LogSubscription's objects.
pub struct Paths {
    /// Its path.
    pub binding: String,
    /// Its path.
    pub leases: String,
    /// Its path.
    pub deployment: String,
    /// Its path.
    pub account: String,
    /// Its path.
    pub config: String,
    /// Its path.
    pub object: String,
    /// Its path.
    pub status: String,
}

impl Paths {
    /// The paths of `namespace/name`.
    pub fn of(namespace: &str, name: &str) -> Paths {
        Paths {
            binding: format!(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{name}-worker-leases"
            ),
            leases: format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"),
            deployment: format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}-worker"),
            account: format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}-worker"),
            config: format!("/api/v1/namespaces/{namespace}/configmaps/{name}-worker"),
            object: format!(
                "/apis/logsub.io/v1alpha1/namespaces/{namespace}/logsubscriptions/{name}"
            ),
            status: format!(
                "/apis/logsub.io/v1alpha1/namespaces/{namespace}/logsubscriptions/{name}/status"
            ),
        }
    }
}

/// A controller context over a mocked API server and a fake AWS account.
pub struct Scenario {
    /// The API server.
    pub server: ApiServer,
    /// The account.
    pub aws: FakeAws,
    /// The context reconciles run in.
    pub ctx: Arc<Context>,
    /// The policies in its cache.
    pub policies: Policies,
    /// The other LogSubscriptions in its cache.
    pub others: Subscriptions,
    /// What fills its caches of the workers' objects.
    pub owned: Owned,
}

impl Scenario {
    /// With `policies`, the `namespaces` known (without labels).
    pub fn new(policies: Vec<LogSubscriptionPolicy>, namespaces: &[&str]) -> Scenario {
        Scenario::with_aws(FakeAws::default(), policies, namespaces)
    }

    /// A controller started afresh (nothing in memory) over the same account.
    pub fn with_aws(
        aws: FakeAws,
        policies: Vec<LogSubscriptionPolicy>,
        namespaces: &[&str],
    ) -> Scenario {
        let (client, server) = ApiServer::start();
        let namespaces: Vec<(&str, BTreeMap<String, String>)> =
            namespaces.iter().map(|n| (*n, BTreeMap::new())).collect();
        let (ctx, policies, others, owned) = context(client, &aws, policies, &namespaces);
        Scenario {
            server,
            aws,
            ctx,
            policies,
            others,
            owned,
        }
    }

    /// Fills the caches with the workers' objects `seen` applied (each with
    /// the uid the API server would give it), as the controller's watches of
    /// them would list them; a cache of which `seen` applied nothing is kept.
    pub fn cache_applied(&mut self, seen: &Seen, paths: &Paths) {
        fn list<K>(writer: &mut reflector::store::Writer<K>, seen: &Seen, path: &str)
        where
            K: kube::Resource<DynamicType = ()>
                + serde::de::DeserializeOwned
                + Clone
                + std::fmt::Debug,
        {
            // One object per cache: listing it again is putting it.
            let Some(body) = seen.bodies(&Method::PATCH, path).pop() else {
                return;
            };
            let mut object: K = serde_json::from_value(body.clone()).expect("an applied object");
            object.meta_mut().uid = Some(format!("uid-of{path}"));
            writer.apply_watcher_event(&Event::Init);
            writer.apply_watcher_event(&Event::InitApply(object));
            writer.apply_watcher_event(&Event::InitDone);
        }
        list(&mut self.owned.deployments, seen, &paths.deployment);
        list(&mut self.owned.bindings, seen, &paths.binding);
        list(&mut self.owned.accounts, seen, &paths.account);
        list(&mut self.owned.configs, seen, &paths.config);
    }

    /// Runs one reconcile of `lsub`.
    pub async fn reconcile(&self, lsub: &LogSubscription) -> Result<(), super::error::Error> {
        let run = reconcile(Arc::new(lsub.clone()), self.ctx.clone());
        tokio::time::timeout(std::time::Duration::from_secs(10), run)
            .await
            .expect("a reconcile ends")
            .map(drop)
    }
}

/// LogSubscription `namespace/name` from `spec`, its finalizer on.
pub fn subscription_in(namespace: &str, name: &str, spec: Value) -> LogSubscription {
    serde_json::from_value(json!({
        "apiVersion": "logsub.io/v1alpha1",
        "kind": "LogSubscription",
        "metadata": {
            "name": name, "namespace": namespace, "uid": format!("uid-{namespace}.{name}"),
            "generation": 1, "finalizers": [super::reconcile::FINALIZER],
        },
        "spec": spec,
    }))
    .expect("a LogSubscription")
}

/// The status write, answered with `lsub` holding what was written.
pub fn status_write(paths: &Paths, lsub: &LogSubscription) -> Expect {
    let object = serde_json::to_value(lsub).expect("json");
    Expect::new(Method::PATCH, paths.status.clone(), move |body| {
        let mut object = object;
        object["status"] = body["status"].clone();
        (200, object)
    })
}

/// A request answered with `code`.
pub fn failing(method: Method, path: &str, code: u16) -> Expect {
    Expect::new(method, path, move |_| {
        (
            code,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": format!("injected {code}")}),
        )
    })
}

/// A DELETE that succeeds.
pub fn deleted(path: &str) -> Expect {
    Expect::new(Method::DELETE, path, |_| {
        (200, json!({"kind": "Status", "status": "Success"}))
    })
}

/// The status the reconcile wrote last.
pub fn written(seen: &Seen, paths: &Paths) -> LogSubscriptionStatus {
    let bodies = seen.bodies(&Method::PATCH, &paths.status);
    let body = bodies.last().expect("a status write");
    serde_json::from_value(body["status"].clone()).expect("a status")
}

/// The status and reason of the condition `type_`.
pub fn condition<'a>(status: &'a LogSubscriptionStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {:?}", status.conditions));
    (c.status.as_str(), c.reason.as_str())
}

/// The requests of a deletion's cleanup once AWS is clean: the workers'
/// Deployment read (and, when `deployment` exists, deleted), their leases
/// listed, the finalizer removed.
pub fn cleanup(paths: &Paths, lsub: &LogSubscription, deployment: Option<Value>) -> Vec<Expect> {
    let object = serde_json::to_value(lsub).expect("json");
    let mut script = match deployment {
        Some(d) => vec![
            Expect::get(paths.deployment.clone(), d),
            deleted(&paths.deployment),
        ],
        None => vec![Expect::missing(paths.deployment.clone())],
    };
    script.push(Expect::empty_list(paths.leases.clone(), "LeaseList"));
    script.push(Expect::new(
        Method::PATCH,
        paths.object.clone(),
        move |_| (200, object),
    ));
    script
}

/// The requests of a first sync with a usable stream, the status write last.
pub fn first_sync(paths: &Paths, lsub: &LogSubscription) -> Vec<Expect> {
    vec![
        Expect::missing(paths.binding.clone()),
        Expect::apply(paths.binding.clone()),
        Expect::empty_list(paths.leases.clone(), "LeaseList"),
        Expect::missing(paths.deployment.clone()),
        Expect::missing(paths.account.clone()),
        Expect::apply(paths.account.clone()),
        Expect::missing(paths.config.clone()),
        Expect::apply(paths.config.clone()),
        Expect::apply(paths.deployment.clone()),
        status_write(paths, lsub),
    ]
}
