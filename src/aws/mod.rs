//! Narrow wrappers over the AWS SDK clients, with every SDK error classified in
//! one place: throttled, transient, or permanent, plus the few that callers act on.

pub mod kinesis;
pub mod logs;

use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kinesis::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::telemetry::AwsCallLabels;

/// How a failed call should be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Over a rate limit: back off, then retry.
    Throttled,
    /// A network or server failure: retry with backoff.
    Transient,
    /// The shard iterator aged out: get a new one and go on.
    ExpiredIterator,
    /// The stream or shard does not exist (any more).
    NotFound,
    /// Retrying will not help (access denied, invalid argument): report it.
    Permanent,
}

/// A classified AWS failure.
#[derive(Debug, thiserror::Error)]
#[error("{class:?} AWS error {code}: {message}")]
pub struct AwsError {
    /// What to do about it.
    pub class: ErrorClass,
    /// The AWS error code, or a description of the failure kind.
    pub code: String,
    /// The message.
    pub message: String,
}

impl AwsError {
    pub(crate) fn permanent(message: impl Into<String>) -> AwsError {
        AwsError {
            class: ErrorClass::Permanent,
            code: "Unexpected".into(),
            message: message.into(),
        }
    }

    /// A stable label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self.class {
            ErrorClass::Throttled => "throttled",
            ErrorClass::Transient => "transient",
            ErrorClass::ExpiredIterator => "expired_iterator",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// `base` acting as the role `role_arn`: STS AssumeRole through `sts` (its
/// identity, region and endpoint), with the session name `session`. Clients
/// built from the result cache the credentials and refresh them before
/// they expire.
pub async fn assuming(
    base: &aws_config::SdkConfig,
    sts: &aws_config::SdkConfig,
    role_arn: &str,
    external_id: Option<&str>,
    session: &str,
) -> aws_config::SdkConfig {
    let mut role = aws_config::sts::AssumeRoleProvider::builder(role_arn)
        .session_name(session)
        .configure(sts);
    if let Some(id) = external_id {
        role = role.external_id(id);
    }
    let provider = role.build().await;
    base.to_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build()
}

/// Deadlines of every AWS call: one `attempt` (a request that hangs is
/// abandoned and, if the SDK's retries allow, sent again), the whole call with
/// its retries (`operation`), and connecting. No call waits forever.
pub fn timeouts(
    attempt: std::time::Duration,
    operation: std::time::Duration,
) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .operation_attempt_timeout(attempt)
        .operation_timeout(operation)
        .build()
}

/// A delete's outcome where the resource already being gone is success.
pub(crate) fn gone_is_ok<T>(result: Result<T, AwsError>) -> Result<(), AwsError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.class == ErrorClass::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The class of an AWS error code (pure; the table of what each code means).
pub fn class_of_code(code: &str) -> ErrorClass {
    match code {
        "ProvisionedThroughputExceededException"
        | "LimitExceededException"
        | "ThrottlingException"
        // STS's (AssumeRole's) own.
        | "Throttling"
        | "ThrottledException"
        | "RequestThrottledException"
        | "RequestThrottled"
        | "EC2ThrottledException"
        | "BandwidthLimitExceeded"
        | "KMSThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "SlowDown" => ErrorClass::Throttled,
        "ExpiredIteratorException" => ErrorClass::ExpiredIterator,
        "ResourceNotFoundException" => ErrorClass::NotFound,
        "InternalFailureException"
        | "InternalFailure"
        | "InternalServerError"
        | "InternalError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "OperationAbortedException"
        | "ResourceInUseException"
        // What the SDK's own retry classifier retries too.
        | "TransactionInProgressException"
        | "PriorRequestNotComplete"
        | "RequestTimeout"
        | "RequestTimeoutException" => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Classifies an SDK error: transport failures and 5xx are transient, else
/// by code; a call that could not get its credentials as the role's
/// AssumeRole went.
pub fn classify<
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
>(
    err: SdkError<E, R>,
) -> AwsError {
    classify_ref(&err)
}

fn classify_ref<
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
>(
    err: &SdkError<E, R>,
) -> AwsError {
    if let SdkError::ConstructionFailure(_) = err
        && let Some(e) = std::error::Error::source(err).and_then(credentials_failure)
    {
        return e;
    }
    let code = err.code().map(str::to_owned);
    // Without a service's message (a role that cannot be assumed, a
    // connection refused), the chain of causes says what went wrong.
    let message = err
        .message()
        .map(str::to_owned)
        .unwrap_or_else(|| aws_sdk_kinesis::error::DisplayErrorContext(err).to_string());
    // A 5xx with no code (a proxy's or a gateway's page) is transient too.
    let server_error = err
        .raw_response()
        .and_then(|raw| (raw as &dyn std::any::Any).downcast_ref::<HttpResponse>())
        .is_some_and(|raw| raw.status().is_server_error());
    let class = match (err, code.as_deref()) {
        (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), _) => ErrorClass::Transient,
        (_, Some(code)) => class_of_code(code),
        (_, None) if server_error => ErrorClass::Transient,
        (SdkError::ResponseError(_), None) => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    };
    AwsError {
        class,
        code: code.unwrap_or_else(|| "NoCode".into()),
        message,
    }
}

/// Why a call's credentials could not be had, classified: a role's
/// credentials come from STS AssumeRole, so an STS that does not answer
/// (or throttles) is transient like any call's, and one that refuses the
/// role is not. `None` when the failure is not about credentials.
fn credentials_failure(err: &(dyn std::error::Error + 'static)) -> Option<AwsError> {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(failed) = e.downcast_ref::<CredentialsError>() {
            let message = aws_sdk_kinesis::error::DisplayErrorContext(failed).to_string();
            let (class, code) = match failed {
                CredentialsError::ProviderTimedOut(_) => {
                    (ErrorClass::Transient, "CredentialsTimedOut")
                }
                CredentialsError::ProviderError(_) => {
                    let sts = std::error::Error::source(failed)
                        .and_then(|s| s.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>());
                    if let Some(sts) = sts {
                        let mut assumed = classify_ref(sts);
                        assumed.message = format!("assuming the role: {}", assumed.message);
                        return Some(assumed);
                    }
                    (ErrorClass::Transient, "CredentialsUnavailable")
                }
                _ => (ErrorClass::Permanent, "CredentialsInvalid"),
            };
            return Some(AwsError {
                class,
                code: code.to_owned(),
                message,
            });
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn without_credentials(e: aws_credential_types::provider::error::CredentialsError) -> AwsError {
        let err: SdkError<aws_sdk_kinesis::operation::get_records::GetRecordsError, ()> =
            SdkError::construction_failure(e);
        classify(err)
    }

    #[test]
    fn a_role_that_cannot_be_assumed_is_classified_as_the_assume_role_went() {
        use aws_credential_types::provider::error::CredentialsError;
        use aws_sdk_sts::error::ErrorMetadata;
        use aws_sdk_sts::operation::assume_role::AssumeRoleError;
        use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
        use aws_smithy_runtime_api::client::result::SdkError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;

        let timed_out = without_credentials(CredentialsError::provider_timed_out(
            std::time::Duration::from_secs(5),
        ));
        assert_eq!(timed_out.class, ErrorClass::Transient, "{timed_out}");

        let unanswered: SdkError<AssumeRoleError, HttpResponse> =
            SdkError::timeout_error("the attempt timed out");
        let sts_down = without_credentials(CredentialsError::provider_error(unanswered));
        assert_eq!(sts_down.class, ErrorClass::Transient, "{sts_down}");

        let refusal = |code: &str| -> SdkError<AssumeRoleError, HttpResponse> {
            SdkError::service_error(
                AssumeRoleError::generic(ErrorMetadata::builder().code(code).build()),
                HttpResponse::new(StatusCode::try_from(403).expect("status"), SdkBody::empty()),
            )
        };
        let denied = without_credentials(CredentialsError::provider_error(refusal("AccessDenied")));
        assert_eq!(denied.class, ErrorClass::Permanent, "{denied}");
        assert_eq!(denied.code, "AccessDenied");
        let throttled =
            without_credentials(CredentialsError::provider_error(refusal("Throttling")));
        assert_eq!(throttled.class, ErrorClass::Throttled, "{throttled}");

        let invalid = without_credentials(CredentialsError::invalid_configuration("no role"));
        assert_eq!(invalid.class, ErrorClass::Permanent, "{invalid}");
    }

    #[test]
    fn codes_are_classified() {
        let cases = [
            (
                "ProvisionedThroughputExceededException",
                ErrorClass::Throttled,
            ),
            ("LimitExceededException", ErrorClass::Throttled),
            ("ExpiredIteratorException", ErrorClass::ExpiredIterator),
            ("ResourceNotFoundException", ErrorClass::NotFound),
            ("InternalFailureException", ErrorClass::Transient),
            ("AccessDeniedException", ErrorClass::Permanent),
            ("InvalidArgumentException", ErrorClass::Permanent),
            ("KMSAccessDeniedException", ErrorClass::Permanent),
        ];
        for (code, class) in cases {
            assert_eq!(class_of_code(code), class, "{code}");
        }
    }
}

/// Counts every request attempt the SDK makes, by service, operation and
/// outcome: what the account is billed and throttled on, retries included.
#[derive(Clone, Debug)]
pub struct CallCounter(pub Family<AwsCallLabels, Counter>);

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "logsub-call-counter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map_or(("unknown", "unknown"), |m| (m.service(), m.name()));
        let outcome = match context.response() {
            None => "transport_error",
            Some(r) if r.status().is_success() => "success",
            Some(r) => {
                // awsJson services name the error in this header ("Code:namespace").
                let code = r
                    .headers()
                    .get("x-amzn-errortype")
                    .and_then(|t| t.split(':').next());
                match code.map(class_of_code) {
                    Some(ErrorClass::Throttled) => "throttled",
                    _ if r.status().as_u16() == 429 => "throttled",
                    _ => "error",
                }
            }
        };
        self.0
            .get_or_create(&AwsCallLabels {
                service: service.to_owned(),
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        Ok(())
    }
}
