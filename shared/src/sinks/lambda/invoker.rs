//! Calling the target function: the [`Invoker`] seam, what one invoke
//! returns, and [`LambdaInvoker`] over the official Lambda client.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationError;
use aws_sdk_lambda::operation::invoke::InvokeError as SdkInvokeError;
use aws_sdk_lambda::primitives::Blob;
use tokio::time::Instant;
use tracing::warn;

/// What one invoke returned (a function error is still an answer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    pub request_id: String,
    pub status_code: i32,
    pub executed_version: Option<String>,
    /// `Unhandled` or `Handled` when the function failed.
    pub function_error: Option<String>,
    pub payload: Vec<u8>,
}

/// An invoke that got no answer from the function.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// Throttling, service errors, timeouts of the call: retried, and not a
    /// function error.
    #[error("invoking {function} failed, will retry")]
    Retryable {
        function: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Access denied, no such function, payload refused: retrying can't help
    /// (the source says which).
    #[error("invoking {function} failed")]
    Fatal {
        function: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The function's ARN and role could not be read (before any invoke).
    #[error("reading the configuration of {function} (lambda:GetFunctionConfiguration) failed")]
    Configuration {
        function: String,
        /// Throttled or a service error: a later step may get through.
        retryable: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The target function as `GetFunctionConfiguration` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionIdentity {
    /// The full ARN, with the qualifier invoked (`…:function:f:live`).
    pub function_arn: String,
    /// The function's execution role: a live mapping reads the stream with
    /// it, and its events name it as `invokeIdentityArn`. Empty when
    /// unknown.
    pub role: String,
}

/// Calls the target function.
pub trait Invoker: Send + Sync {
    fn invoke(
        &self,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Invocation, InvokeError>> + Send;
    /// The function's ARN, as the on-failure record names it: the full ARN
    /// once [`Invoker::identity`] has looked it up.
    fn function_arn(&self) -> &str;
    /// Looks the function up, once; later calls answer from the first.
    /// Invokers that can't look anything up know only their ARN.
    fn identity(&self) -> impl Future<Output = Result<FunctionIdentity, InvokeError>> + Send {
        async {
            Ok(FunctionIdentity {
                function_arn: self.function_arn().to_owned(),
                role: String::new(),
            })
        }
    }
}

/// Told of each call: when it is sent and whether it was answered (the
/// engine's time between invokes is measured from them).
#[derive(Clone, Copy)]
pub struct Calls<'a> {
    pub sent: &'a (dyn Fn() + Sync),
    pub answered: &'a (dyn Fn(bool) + Sync),
}

impl Calls<'_> {
    /// For callers that measure nothing.
    pub const NONE: Calls<'static> = Calls {
        sent: &|| {},
        answered: &|_| {},
    };
}

/// Invokes until the function answers. Throttles and service errors are
/// retried with backoff and never reach the function, so they count as
/// nothing; the mapping retries them "until the records expire or exceed
/// the maximum age" (<https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html>).
/// `give_up` says when that is (the record age limit, or the step's stop
/// time, which no wait runs past): then `None`, and nothing was invoked
/// since the last answer.
///
/// `payload` builds each attempt's payload (assembled from the bytes its
/// batch was written as, no record written again): the call takes it by
/// value, so building it per attempt copies it once, where keeping one to
/// copy from would copy it twice on the first attempt, the one that counts.
pub async fn invoke_retrying<I: Invoker + ?Sized>(
    invoker: &I,
    payload: &(dyn Fn() -> Vec<u8> + Sync),
    base_backoff: Duration,
    stop_at: Option<Instant>,
    give_up: impl Fn() -> bool,
    calls: Calls<'_>,
) -> Result<Option<Invocation>, InvokeError> {
    let mut attempt = 0u32;
    loop {
        let body = payload();
        (calls.sent)();
        let result = invoker.invoke(body).await;
        (calls.answered)(result.is_ok());
        match result {
            Ok(invocation) => return Ok(Some(invocation)),
            Err(error @ InvokeError::Retryable { .. }) => {
                attempt += 1;
                {
                    // Scoped: a `&dyn Error` held across the sleep would
                    // make the future not `Send`.
                    let error = &error as &(dyn std::error::Error + 'static);
                    warn!(error, attempt, "invoke throttled or failed; retrying");
                }
                if give_up() {
                    return Ok(None);
                }
                let mut wait = crate::backoff::backoff(base_backoff, attempt.min(8));
                if let Some(at) = stop_at {
                    wait = wait.min(at.saturating_duration_since(Instant::now()));
                }
                tokio::time::sleep(wait).await;
                if give_up() {
                    return Ok(None);
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// A function, invoked synchronously (`RequestResponse`), as the mapping
/// invokes it.
#[derive(Debug, Clone)]
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
    function: String,
    qualifier: Option<String>,
    /// What `GetFunctionConfiguration` said, once asked.
    identity: OnceLock<FunctionIdentity>,
}

impl LambdaInvoker {
    /// `function` is a name or ARN; `qualifier` a version or alias.
    pub fn new(
        client: aws_sdk_lambda::Client,
        function: impl Into<String>,
        qualifier: Option<String>,
    ) -> Self {
        Self {
            client,
            function: function.into(),
            qualifier,
            identity: OnceLock::new(),
        }
    }
}

/// Invoke errors that a later attempt can get past: the function was not
/// run, so they are not function errors.
fn is_retryable(error: &SdkError<SdkInvokeError>) -> bool {
    match error {
        SdkError::ServiceError(e) => matches!(
            e.err(),
            SdkInvokeError::TooManyRequestsException(_)
                | SdkInvokeError::ServiceException(_)
                | SdkInvokeError::ResourceNotReadyException(_)
                | SdkInvokeError::ResourceConflictException(_)
                | SdkInvokeError::EniLimitReachedException(_)
                | SdkInvokeError::SubnetIpAddressLimitReachedException(_)
                | SdkInvokeError::SnapStartNotReadyException(_)
                | SdkInvokeError::SnapStartTimeoutException(_)
                | SdkInvokeError::EfsMountTimeoutException(_)
        ),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    }
}

impl Invoker for LambdaInvoker {
    async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        let result = self
            .client
            .invoke()
            .function_name(&self.function)
            .set_qualifier(self.qualifier.clone())
            .payload(Blob::new(payload))
            .send()
            .await;
        match result {
            // A function error is an answer: `function_error` says so.
            Ok(output) => Ok(Invocation {
                request_id: aws_sdk_lambda::operation::RequestId::request_id(&output)
                    .unwrap_or_default()
                    .to_owned(),
                status_code: output.status_code(),
                executed_version: output.executed_version().map(str::to_owned),
                function_error: output.function_error().map(str::to_owned),
                payload: output
                    .payload()
                    .map(|p| p.as_ref().to_vec())
                    .unwrap_or_default(),
            }),
            Err(error) if is_retryable(&error) => Err(InvokeError::Retryable {
                function: self.function.clone(),
                source: Box::new(error),
            }),
            Err(error) => Err(InvokeError::Fatal {
                function: self.function.clone(),
                source: Box::new(error),
            }),
        }
    }

    fn function_arn(&self) -> &str {
        self.identity
            .get()
            .map_or(&self.function, |identity| &identity.function_arn)
    }

    /// One `GetFunctionConfiguration` of the function and qualifier invoked
    /// (the replay role may read only the allowed targets' configuration).
    async fn identity(&self) -> Result<FunctionIdentity, InvokeError> {
        if let Some(identity) = self.identity.get() {
            return Ok(identity.clone());
        }
        let output = self
            .client
            .get_function_configuration()
            .function_name(&self.function)
            .set_qualifier(self.qualifier.clone())
            .send()
            .await
            .map_err(|error| {
                let throttled = matches!(
                    error.as_service_error(),
                    Some(
                        GetFunctionConfigurationError::TooManyRequestsException(_)
                            | GetFunctionConfigurationError::ServiceException(_)
                    )
                ) || matches!(
                    error,
                    SdkError::TimeoutError(_)
                        | SdkError::DispatchFailure(_)
                        | SdkError::ResponseError(_)
                );
                InvokeError::Configuration {
                    function: self.function.clone(),
                    retryable: throttled,
                    source: Box::new(error),
                }
            })?;
        let identity = FunctionIdentity {
            function_arn: output
                .function_arn()
                .map_or_else(|| self.function.clone(), str::to_owned),
            role: output.role().unwrap_or_default().to_owned(),
        };
        // Two lookups at once both store the same answer; the first wins.
        Ok(self.identity.get_or_init(|| identity).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_lambda::operation::invoke::InvokeOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    #[tokio::test]
    async fn function_errors_are_answers_and_throttles_are_retryable() {
        let rule = mock!(aws_sdk_lambda::Client::invoke)
            .match_requests(|r| {
                r.function_name() == Some("consumer") && r.qualifier() == Some("live")
            })
            .sequence()
            .output(|| {
                InvokeOutput::builder()
                    .status_code(200)
                    .function_error("Unhandled")
                    .executed_version("7")
                    .payload(Blob::new(&b"{\"errorType\":\"Poison\"}"[..]))
                    .build()
            })
            .http_status(
                429,
                Some(r#"{"__type":"TooManyRequestsException","message":"Rate exceeded"}"#.into()),
            )
            .times(3)
            .http_status(
                404,
                Some(
                    r#"{"__type":"ResourceNotFoundException","Message":"Function not found"}"#
                        .into(),
                ),
            )
            .build();
        let client = mock_client!(aws_sdk_lambda, RuleMode::Sequential, [&rule], |c| c
            .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled()));
        let invoker = LambdaInvoker::new(client, "consumer", Some("live".into()));
        let answer = invoker.invoke(b"{}".to_vec()).await.unwrap();
        assert_eq!(answer.function_error.as_deref(), Some("Unhandled"));
        assert_eq!(answer.executed_version.as_deref(), Some("7"));
        for _ in 0..3 {
            let throttled = invoker.invoke(b"{}".to_vec()).await.unwrap_err();
            assert!(matches!(throttled, InvokeError::Retryable { .. }));
            // The SDK's error is kept as the source, not copied as text.
            let sdk = std::error::Error::source(&throttled)
                .and_then(|e| e.downcast_ref::<SdkError<SdkInvokeError>>())
                .and_then(SdkError::as_service_error);
            assert!(sdk.is_some_and(SdkInvokeError::is_too_many_requests_exception));
            assert!(
                !throttled.to_string().contains("Rate exceeded"),
                "{throttled}"
            );
        }
        let fatal = invoker.invoke(b"{}".to_vec()).await.unwrap_err();
        assert!(matches!(fatal, InvokeError::Fatal { .. }), "{fatal}");
        assert!(fatal.to_string().contains("invoking consumer"), "{fatal}");
    }

    /// Issue 12, point 4: a live event's `invokeIdentityArn` is the consuming
    /// function's execution role, and the on-failure record's `functionArn`
    /// the full ARN with its qualifier: one `GetFunctionConfiguration` gives
    /// both, asked once.
    #[tokio::test]
    async fn the_identity_is_looked_up_once_with_the_qualifier() {
        use aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput;
        let rule = mock!(aws_sdk_lambda::Client::get_function_configuration)
            .match_requests(|r| {
                r.function_name() == Some("consumer") && r.qualifier() == Some("live")
            })
            .then_output(|| {
                GetFunctionConfigurationOutput::builder()
                    .function_arn("arn:aws:lambda:eu-west-1:111122223333:function:consumer:live")
                    .role("arn:aws:iam::111122223333:role/consumer-role")
                    .build()
            });
        let client = mock_client!(aws_sdk_lambda, RuleMode::Sequential, [&rule]);
        let invoker = LambdaInvoker::new(client, "consumer", Some("live".into()));
        assert_eq!(invoker.function_arn(), "consumer", "not looked up yet");
        for _ in 0..3 {
            let identity = invoker.identity().await.unwrap();
            assert_eq!(
                identity.role,
                "arn:aws:iam::111122223333:role/consumer-role"
            );
        }
        assert_eq!(
            invoker.function_arn(),
            "arn:aws:lambda:eu-west-1:111122223333:function:consumer:live"
        );
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_denied_lookup_is_not_retryable_and_keeps_the_sdk_error() {
        let rule = mock!(aws_sdk_lambda::Client::get_function_configuration)
            .sequence()
            .http_status(
                403,
                Some(r#"{"__type":"AccessDeniedException","Message":"not authorized"}"#.into()),
            )
            .build();
        let client = mock_client!(aws_sdk_lambda, RuleMode::Sequential, [&rule], |c| c
            .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled()));
        let invoker = LambdaInvoker::new(client, "consumer", None);
        let error = invoker.identity().await.unwrap_err();
        assert!(
            matches!(
                error,
                InvokeError::Configuration {
                    retryable: false,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "reading the configuration of consumer (lambda:GetFunctionConfiguration) failed"
        );
        assert!(std::error::Error::source(&error).is_some());
    }
}
