//! Calling the target function: the [`Invoker`] seam, what one invoke
//! returns, and [`LambdaInvoker`] over the official Lambda client.

use std::future::Future;

use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::invoke::InvokeError as SdkInvokeError;
use aws_sdk_lambda::primitives::Blob;

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
}

/// Calls the target function.
pub trait Invoker: Send + Sync {
    fn invoke(
        &self,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Invocation, InvokeError>> + Send;
    /// The function's ARN, as the on-failure record names it.
    fn function_arn(&self) -> &str;
}

/// A function, invoked synchronously (`RequestResponse`), as the mapping
/// invokes it.
#[derive(Debug, Clone)]
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
    function: String,
    qualifier: Option<String>,
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
        &self.function
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
}
