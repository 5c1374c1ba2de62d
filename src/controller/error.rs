//! What a failed subscription filter call means (pure): the state the log
//! group is shown in, and whether retrying can help. CloudWatch Logs reports
//! several distinct problems under one error code, told apart by the message.

use crate::api::FilterState;
use crate::aws::{AwsError, ErrorClass};
use crate::controller::apply::ApplyError;

/// Why a reconcile failed; it is retried with per-object backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An AWS call failed where no condition can carry it (cleanup).
    #[error("AWS: {0}")]
    Aws(#[from] AwsError),
    /// The workers' objects could not be applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The policies or the namespace could not be read, so whether the
    /// LogSubscription is permitted is not known: nothing is done.
    #[error("authorizing: {0}")]
    Authorize(String),
    /// Adding or removing the finalizer failed, or the step it guards did.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A stable label for metrics and Events.
    pub fn category(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Kube(e) | Error::Apply(ApplyError::Kube(e)) => match e {
                kube::Error::Api(s) if s.code == 409 => "conflict",
                kube::Error::Api(s) if s.code == 403 => "forbidden",
                _ => "kubernetes",
            },
            Error::Aws(e) => match e.class {
                ErrorClass::Throttled => "aws_throttled",
                ErrorClass::Permanent if e.code.contains("AccessDenied") => "aws_access_denied",
                ErrorClass::Permanent => "aws_permanent",
                _ => "aws_transient",
            },
            Error::Apply(ApplyError::Build(_)) => "invalid_object",
            Error::Apply(ApplyError::NameTaken { .. }) => "name_conflict",
            Error::Authorize(_) => "authorize",
            Error::Finalizer(e) => match e.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.category(),
                F::AddFinalizer(_) | F::RemoveFinalizer(_) => "finalizer",
                F::UnnamedObject | F::InvalidFinalizer => "invalid_object",
            },
        }
    }
}

/// The reason an AWS failure is shown with, in a condition or an Event.
pub fn aws_reason(e: &AwsError) -> &'static str {
    match e.class {
        ErrorClass::Throttled => "AwsThrottled",
        ErrorClass::Transient => "AwsUnavailable",
        _ if e.code.contains("AccessDenied") => "AccessDenied",
        _ => "AwsError",
    }
}

/// How a failed PutSubscriptionFilter / DeleteSubscriptionFilter leaves a log group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterFailure {
    /// The state to show for the group.
    pub state: FilterState,
    /// Whether retrying with backoff can help (throttling, a conflicting
    /// operation, a transient failure); otherwise the group waits for a change.
    pub retry: bool,
}

/// Classifies an AWS failure of a subscription filter call.
pub fn filter_failure(e: &AwsError) -> FilterFailure {
    let message = e.message.to_ascii_lowercase();
    let (state, retry) = match (e.class, e.code.as_str()) {
        // For filters CloudWatch Logs throttles with ThrottlingException; its
        // LimitExceededException ("Resource limit exceeded.") is the two-filter limit.
        (_, "LimitExceededException") => (FilterState::LimitExceeded, false),
        (ErrorClass::Throttled | ErrorClass::Transient, _) => (FilterState::Pending, true),
        (_, "OperationAbortedException") => (FilterState::Pending, true),
        (_, code) if code.contains("AccessDenied") => (FilterState::AccessDenied, false),
        (_, "InvalidParameterException") if message.contains("test message") => {
            (FilterState::DestinationUnreachable, false)
        }
        (_, "InvalidParameterException") if message.contains("pattern") => {
            (FilterState::InvalidFilterPattern, false)
        }
        (_, "ResourceNotFoundException") => (FilterState::Pending, true),
        _ => (FilterState::Failed, false),
    };
    FilterFailure { state, retry }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::class_of_code;

    fn error(code: &str, message: &str) -> AwsError {
        AwsError {
            class: class_of_code(code),
            code: code.into(),
            message: message.into(),
        }
    }

    /// The messages CloudWatch Logs answers with, each to its state.
    #[test]
    fn each_failure_becomes_a_state() {
        let cases = [
            (
                "LimitExceededException",
                "Resource limit exceeded.",
                FilterState::LimitExceeded,
                false,
            ),
            (
                "ThrottlingException",
                "Rate exceeded",
                FilterState::Pending,
                true,
            ),
            (
                "OperationAbortedException",
                "Multiple requests to modify the same resource were in conflict.",
                FilterState::Pending,
                true,
            ),
            (
                "AccessDeniedException",
                "User is not authorized to perform: logs:PutSubscriptionFilter",
                FilterState::AccessDenied,
                false,
            ),
            (
                "InvalidParameterException",
                "Could not deliver test message to specified destination. Check if the destination is valid.",
                FilterState::DestinationUnreachable,
                false,
            ),
            (
                "InvalidParameterException",
                "Invalid filter pattern",
                FilterState::InvalidFilterPattern,
                false,
            ),
            (
                "ResourceNotFoundException",
                "The specified log group does not exist.",
                FilterState::Pending,
                true,
            ),
            (
                "ValidationException",
                "1 validation error",
                FilterState::Failed,
                false,
            ),
        ];
        for (code, message, state, retry) in cases {
            assert_eq!(
                filter_failure(&error(code, message)),
                FilterFailure { state, retry },
                "{code}: {message}"
            );
        }
    }
}
