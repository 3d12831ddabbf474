//! Lambda Invoke as AWS answers it, in front of `cargo lambda watch`, whose
//! answers differ: it takes only a bare binary name, answers a handler error
//! with HTTP 500 (which the SDK retries, running the function again), sets no
//! executed version, and answers an `Event` invoke synchronously.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use percent_encoding::percent_decode_str;

/// A request id as Lambda sends them in `x-amzn-RequestId`: a random
/// (version 4) UUID. Clients index it directly (boto3's
/// `ResponseMetadata.RequestId`), and on-failure records carry it.
pub fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Every Lambda answer carries a request id, errors included.
fn with_request_id(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    if let Ok(value) = HeaderValue::from_str(&request_id()) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

/// The function and qualifier an Invoke path names.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub qualifier: Option<String>,
}

/// The function segment of `/2015-03-31/functions/{FunctionName}/invocations`.
pub fn invoke_function(path: &str) -> Option<String> {
    function_segment(path, "/invocations")
}

/// The function segment of `/2015-03-31/functions/{FunctionName}/configuration`
/// (`GetFunctionConfiguration`).
pub fn configuration_function(path: &str) -> Option<String> {
    function_segment(path, "/configuration")
}

fn function_segment(path: &str, suffix: &str) -> Option<String> {
    let rest = path.strip_prefix("/2015-03-31/functions/")?;
    let function = rest.strip_suffix(suffix)?;
    if function.is_empty() || function.contains('/') {
        return None;
    }
    Some(
        percent_decode_str(function)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// `GetFunctionConfiguration` of a local function, as AWS answers it: the
/// full ARN (with the qualifier asked for) and an execution role of the
/// function's own, which a replay names as the events' `invokeIdentityArn`.
pub fn configuration(target: &Target, region: &str, account: &str) -> Response<Full<Bytes>> {
    let name = &target.name;
    let arn = format!("arn:aws:lambda:{region}:{account}:function:{name}");
    let function_arn = match &target.qualifier {
        Some(qualifier) => format!("{arn}:{qualifier}"),
        None => arn,
    };
    let body = serde_json::json!({
        "FunctionName": name,
        "FunctionArn": function_arn,
        "Role": format!("arn:aws:iam::{account}:role/{name}-role"),
        "Runtime": "provided.al2023",
        "Handler": "bootstrap",
        "Version": executed_version(target.qualifier.as_deref()),
        "PackageType": "Zip",
        "State": "Active",
        "LastUpdateStatus": "Successful",
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    with_request_id(response)
}

/// Maps a function name, partial ARN or ARN (with or without a qualifier)
/// to the local function. The `Qualifier` query parameter wins over none.
pub fn resolve(function: &str, qualifier: Option<&str>) -> Target {
    let parts: Vec<&str> = function.split(':').collect();
    let (name, in_name) = match parts.as_slice() {
        // arn:aws:lambda:region:account:function:name[:qualifier]
        ["arn", _, "lambda", _, _, "function", name, rest @ ..] => (*name, rest.first().copied()),
        // account:function:name[:qualifier]
        [_, "function", name, rest @ ..] => (*name, rest.first().copied()),
        [name, qualifier] => (*name, Some(*qualifier)),
        _ => (function, None),
    };
    Target {
        name: name.to_owned(),
        qualifier: qualifier.or(in_name).map(str::to_owned),
    }
}

/// The version AWS reports for a qualifier: a published version answers as
/// itself; `$LATEST` and aliases (all local functions are the working copy)
/// as `$LATEST`.
pub fn executed_version(qualifier: Option<&str>) -> &str {
    match qualifier {
        Some(q) if q.bytes().all(|b| b.is_ascii_digit()) && !q.is_empty() => q,
        _ => "$LATEST",
    }
}

/// AWS's answer for a function that does not exist.
pub fn not_found(name: &str, region: &str, account: &str) -> Response<Full<Bytes>> {
    let message = format!("Function not found: arn:aws:lambda:{region}:{account}:function:{name}");
    let body = serde_json::json!({ "Type": "User", "Message": message });
    error_response(StatusCode::NOT_FOUND, "ResourceNotFoundException", body)
}

/// An AWS REST-JSON error: the type travels in `x-amzn-ErrorType`.
pub fn error_response(
    status: StatusCode,
    error_type: &str,
    body: serde_json::Value,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(error_type) {
        headers.insert("x-amzn-errortype", value);
    }
    with_request_id(response)
}

/// Turns cargo lambda's answer into Lambda's: success and handler errors both
/// answer 200, the latter flagged `X-Amz-Function-Error: Unhandled` with the
/// error payload, which the SDK hands to the caller instead of retrying.
pub fn translate(status: StatusCode, body: Bytes, version: &str) -> Response<Full<Bytes>> {
    let function_error = !status.is_success();
    let body = if function_error && serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        // Not the runtime's {"errorType","errorMessage"}: the process died or
        // never answered; Lambda reports that as a runtime error too.
        let message = String::from_utf8_lossy(&body).into_owned();
        Bytes::from(
            serde_json::json!({ "errorType": "Runtime.ExitError", "errorMessage": message })
                .to_string(),
        )
    } else {
        body
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(version) {
        headers.insert("x-amz-executed-version", value);
    }
    if function_error {
        headers.insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
    }
    with_request_id(response)
}

/// `Event` invokes are queued by Lambda: 202 with an empty body.
pub fn accepted() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::ACCEPTED;
    with_request_id(response)
}

/// `DryRun` checks the call and runs nothing: 204.
pub fn dry_run() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    with_request_id(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_arns_and_qualifiers_map_to_local_functions() {
        let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aecho%3A7/invocations";
        let function = invoke_function(path).unwrap();
        assert_eq!(
            resolve(&function, None),
            Target {
                name: "echo".into(),
                qualifier: Some("7".into())
            }
        );
        assert_eq!(
            resolve("echo", Some("live")).qualifier.as_deref(),
            Some("live")
        );
        assert_eq!(resolve("echo:live", None).name, "echo");
        assert_eq!(resolve("123456789012:function:echo", None).name, "echo");
        assert_eq!(
            invoke_function("/2015-03-31/functions/echo/configuration"),
            None
        );
        assert_eq!(executed_version(Some("7")), "7");
        assert_eq!(executed_version(Some("live")), "$LATEST");
        assert_eq!(executed_version(None), "$LATEST");
    }

    #[test]
    fn handler_errors_answer_200_unhandled() {
        let error = Bytes::from_static(br#"{"errorType":"E","errorMessage":"m"}"#);
        let response = translate(StatusCode::INTERNAL_SERVER_ERROR, error.clone(), "$LATEST");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
        assert_eq!(response.headers()["x-amz-executed-version"], "$LATEST");
        let ok = translate(StatusCode::OK, Bytes::from_static(b"{}"), "3");
        assert!(ok.headers().get("x-amz-function-error").is_none());
    }

    fn is_uuid_v4(id: &str) -> bool {
        let groups: Vec<&str> = id.split('-').collect();
        groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
            && id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
            && groups[2].starts_with('4')
            && groups[3].starts_with(['8', '9', 'a', 'b'])
    }

    /// Issue 12, point 8: AWS sends `x-amzn-RequestId` on every answer
    /// (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html), a new
    /// one each time, and `X-Amz-Executed-Version` on synchronous ones.
    #[test]
    fn every_answer_carries_a_new_request_id() {
        let answers = [
            translate(StatusCode::OK, Bytes::from_static(b"{}"), "$LATEST"),
            translate(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(b"{}"),
                "3",
            ),
            accepted(),
            dry_run(),
            not_found("nope", "us-east-1", "123456789012"),
        ];
        let ids: std::collections::BTreeSet<String> = answers
            .iter()
            .map(|r| {
                let id = r.headers()["x-amzn-requestid"].to_str().unwrap().to_owned();
                assert!(is_uuid_v4(&id), "{id}");
                id
            })
            .collect();
        assert_eq!(ids.len(), answers.len(), "one id per answer");
        assert_eq!(answers[0].headers()["x-amz-executed-version"], "$LATEST");
        assert_eq!(answers[1].headers()["x-amz-executed-version"], "3");
    }

    #[test]
    fn configuration_names_the_full_arn_and_a_role() {
        assert_eq!(
            configuration_function("/2015-03-31/functions/echo/configuration").as_deref(),
            Some("echo")
        );
        assert_eq!(
            configuration_function("/2015-03-31/functions/echo/invocations"),
            None
        );
        let target = resolve("echo", Some("live"));
        let response = configuration(&target, "eu-west-1", "123456789012");
        let body: serde_json::Value =
            serde_json::from_slice(&body_bytes(response.into_body())).unwrap();
        assert_eq!(
            body["FunctionArn"],
            "arn:aws:lambda:eu-west-1:123456789012:function:echo:live"
        );
        assert_eq!(body["Role"], "arn:aws:iam::123456789012:role/echo-role");
        assert_eq!(body["Version"], "$LATEST");
    }

    fn body_bytes(body: Full<Bytes>) -> Bytes {
        use http_body_util::BodyExt;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(body.collect())
            .unwrap()
            .to_bytes()
    }
}
