//! The one loopback endpoint: a plain HTTP/1.1 reverse proxy that routes each
//! call by what it is (`X-Amz-Target`, the Invoke path, the signing service)
//! to kinesis-mock, cargo lambda or moto, and adds what AWS does and the
//! emulators don't: Lambda's invoke semantics, Kinesis shard limits, and the
//! faults a test asks for. Admin calls live under `/__rewind/`.

pub mod faults;
pub mod lambda;
pub mod limits;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use faults::{Fault, FaultKind, Faults};
use limits::{ShardKey, ShardLimits, ShardRange};

/// The account every emulator is started with, so ARNs agree.
pub const ACCOUNT: &str = "123456789012";
const KINESIS_TARGET: &str = "Kinesis_20131202.";

/// Where the proxy sends what.
#[derive(Clone, Debug)]
pub struct Backends {
    pub moto: SocketAddr,
    /// kinesis-mock, or moto when Kinesis is served from moto.
    pub kinesis: SocketAddr,
    pub lambda: SocketAddr,
}

/// Returned by the service to make hyper close the connection unanswered.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped ({0})")]
pub struct Dropped(&'static str);

pub(crate) type Body = Full<Bytes>;

/// The endpoint's shared state.
pub struct Proxy {
    backends: Backends,
    functions: BTreeSet<String>,
    client: Client<HttpConnector, Body>,
    limits: Mutex<ShardLimits>,
    faults: Mutex<Faults>,
}

/// What a call is, for routing and fault matching.
struct Call {
    service: String,
    operation: String,
    region: String,
}

impl Proxy {
    pub fn new(backends: Backends, functions: BTreeSet<String>, shard_limits: bool) -> Self {
        Proxy {
            backends,
            functions,
            client: Client::builder(TokioExecutor::new()).build_http(),
            limits: Mutex::new(ShardLimits::new(shard_limits, ACCOUNT)),
            faults: Mutex::new(Faults::default()),
        }
    }

    /// Serves `listener` until `shutdown` turns true; open connections are
    /// closed then too.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let proxy = Arc::clone(&self);
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let proxy = Arc::clone(&proxy);
                            async move { proxy.handle(request).await }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        connections.shutdown().await;
    }

    async fn handle(&self, request: Request<Incoming>) -> Result<Response<Body>, Dropped> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|_| Dropped("request body unreadable"))?
            .to_bytes();
        if parts.uri.path().starts_with("/__rewind/") {
            return Ok(self.admin(&parts, &body));
        }
        let call = classify(&parts, &body);
        let fault = self.fault_for(&call, parts.uri.path(), &body);
        if let Some(kind) = fault {
            debug!(service = %call.service, operation = %call.operation, ?kind, "injecting a fault");
            if kind == FaultKind::Unprocessed {
                return self.unprocessed(&parts, body).await;
            }
            return fault_response(kind, &call);
        }
        match call.service.as_str() {
            "kinesis" => self.kinesis(&call, &parts, body).await,
            "lambda" if lambda::invoke_function(parts.uri.path()).is_some() => {
                self.invoke(&call, &parts, body).await
            }
            // moto knows nothing of the local functions.
            "lambda" if parts.method == Method::GET => {
                match lambda::configuration_function(parts.uri.path()) {
                    Some(function) => Ok(self.configuration(&call, &parts, &function)),
                    None => self.forward(self.backends.moto, &parts, body).await,
                }
            }
            _ => self.forward(self.backends.moto, &parts, body).await,
        }
    }

    /// Sends the call on unchanged and returns the answer, fully read.
    async fn forward(
        &self,
        to: SocketAddr,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Body>, Dropped> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = format!("http://{to}{path}")
            .parse()
            .map_err(|_| Dropped("unparsable path"))?;
        *request.headers_mut() = parts.headers.clone();
        // The body may not be the caller's (PutRecords without its throttled
        // entries, a ListShards of our own): its framing is hyper's to set
        // from the body sent. A stale Content-Length would leave the backend
        // waiting for bytes that never come.
        request.headers_mut().remove("content-length");
        request.headers_mut().remove("transfer-encoding");
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(error) => {
                warn!(%to, %error, "backend unreachable");
                return Ok(json_error(
                    StatusCode::BAD_GATEWAY,
                    "InternalFailure",
                    &format!("local backend {to} unreachable"),
                ));
            }
        };
        let (mut head, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|_| Dropped("backend body unreadable"))?
            .to_bytes();
        // The body is re-sent whole; its framing is hyper's to choose again.
        head.headers.remove("transfer-encoding");
        head.headers.remove("connection");
        Ok(Response::from_parts(head, Full::new(body)))
    }

    fn configuration(&self, call: &Call, parts: &Parts, function: &str) -> Response<Body> {
        let query_qualifier = query_param(parts.uri.query(), "Qualifier");
        let target = lambda::resolve(function, query_qualifier.as_deref());
        if !self.functions.contains(&target.name) {
            return lambda::not_found(&target.name, &call.region, ACCOUNT);
        }
        lambda::configuration(&target, &call.region, ACCOUNT)
    }

    async fn invoke(
        &self,
        call: &Call,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Body>, Dropped> {
        let function = lambda::invoke_function(parts.uri.path()).unwrap_or_default();
        let query_qualifier = query_param(parts.uri.query(), "Qualifier");
        let target = lambda::resolve(&function, query_qualifier.as_deref());
        if !self.functions.contains(&target.name) {
            return Ok(lambda::not_found(&target.name, &call.region, ACCOUNT));
        }
        let invocation_type = parts
            .headers
            .get("x-amz-invocation-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("RequestResponse");
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = format!(
            "http://{}/2015-03-31/functions/{}/invocations",
            self.backends.lambda, target.name
        )
        .parse()
        .map_err(|_| Dropped("unparsable function name"))?;
        request
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        match invocation_type {
            "DryRun" => Ok(lambda::dry_run()),
            "Event" => {
                // Lambda queues the event and answers at once; the run
                // happens after, its outcome visible only in its effects.
                let client = self.client.clone();
                let name = target.name.clone();
                tokio::spawn(async move {
                    match client.request(request).await {
                        Ok(response) => {
                            let _ = response.into_body().collect().await;
                        }
                        Err(error) => warn!(function = %name, %error, "event invoke failed"),
                    }
                });
                Ok(lambda::accepted())
            }
            _ => {
                let version = lambda::executed_version(target.qualifier.as_deref()).to_owned();
                let response = match self.client.request(request).await {
                    Ok(response) => response,
                    Err(error) => {
                        warn!(function = %target.name, %error, "cargo lambda unreachable");
                        return Ok(lambda::error_response(
                            StatusCode::BAD_GATEWAY,
                            "ServiceException",
                            json!({"Type": "Service", "Message": "local functions unreachable"}),
                        ));
                    }
                };
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|_| Dropped("function answer unreadable"))?
                    .to_bytes();
                Ok(lambda::translate(status, body, &version))
            }
        }
    }

    async fn kinesis(
        &self,
        call: &Call,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Body>, Dropped> {
        let to = self.backends.kinesis;
        if !lock(&self.limits).enabled {
            return self.forward(to, parts, body).await;
        }
        let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let stream = stream_name(&input);
        match call.operation.as_str() {
            "GetShardIterator" => {
                let response = self.forward(to, parts, body).await?;
                if let (Some(stream), Some(shard)) = (stream, input["ShardId"].as_str()) {
                    let key = ShardKey {
                        stream,
                        shard: shard.to_owned(),
                    };
                    if let Some(iterator) = response_json(&response)["ShardIterator"].as_str() {
                        lock(&self.limits).remember_iterator(iterator, key, Instant::now());
                    }
                }
                Ok(response)
            }
            "GetRecords" => {
                let iterator = input["ShardIterator"].as_str().unwrap_or_default();
                let admitted = lock(&self.limits).admit_get(iterator, Instant::now());
                let key = match admitted {
                    Ok(key) => key,
                    Err(key) => return Ok(throughput_exceeded(&lock(&self.limits).message(&key))),
                };
                let response = self.forward(to, parts, body).await?;
                if let Some(key) = key
                    && response.status().is_success()
                {
                    let output = response_json(&response);
                    let bytes: usize = output["Records"]
                        .as_array()
                        .map(|records| records.iter().map(record_bytes).sum())
                        .unwrap_or(0);
                    let now = Instant::now();
                    let mut limits = lock(&self.limits);
                    limits.charge_get(&key, bytes, now);
                    if let Some(next) = output["NextShardIterator"].as_str() {
                        limits.remember_iterator(next, key, now);
                    }
                }
                Ok(response)
            }
            "PutRecord" => {
                let Some(stream) = stream else {
                    return self.forward(to, parts, body).await;
                };
                let Some(shard) = self.shard_of(parts, &stream, &input).await else {
                    return self.forward(to, parts, body).await;
                };
                let key = ShardKey { stream, shard };
                let admitted =
                    lock(&self.limits).admit_put(&key, put_bytes(&input), Instant::now());
                if !admitted {
                    return Ok(throughput_exceeded(&lock(&self.limits).message(&key)));
                }
                self.forward(to, parts, body).await
            }
            "PutRecords" => self.put_records(parts, input, stream, body).await,
            "UpdateShardCount" | "SplitShard" | "MergeShards" | "DeleteStream" | "CreateStream" => {
                if let Some(stream) = stream {
                    lock(&self.limits).forget_shard_map(&stream);
                }
                self.forward(to, parts, body).await
            }
            _ => self.forward(to, parts, body).await,
        }
    }

    /// PutRecords is never throttled whole on Kinesis: each record over its
    /// shard's budget fails alone with `ProvisionedThroughputExceededException`
    /// and the rest are written, in order.
    async fn put_records(
        &self,
        parts: &Parts,
        mut input: Value,
        stream: Option<String>,
        body: Bytes,
    ) -> Result<Response<Body>, Dropped> {
        let to = self.backends.kinesis;
        let Some(stream) = stream else {
            return self.forward(to, parts, body).await;
        };
        let Some(records) = input["Records"].as_array().cloned() else {
            return self.forward(to, parts, body).await;
        };
        let Some(ranges) = self.shard_map(parts, &stream).await else {
            return self.forward(to, parts, body).await;
        };
        let now = Instant::now();
        let mut refused: Vec<Option<String>> = Vec::with_capacity(records.len());
        {
            let mut limits = lock(&self.limits);
            for record in &records {
                let hash = limits::hash_key(
                    record["PartitionKey"].as_str().unwrap_or_default(),
                    record["ExplicitHashKey"].as_str(),
                );
                let shard = limits::shard_for(&ranges, hash).map(str::to_owned);
                let verdict = shard.and_then(|shard| {
                    let key = ShardKey {
                        stream: stream.clone(),
                        shard,
                    };
                    (!limits.admit_put(&key, put_bytes(record), now)).then(|| limits.message(&key))
                });
                refused.push(verdict);
            }
        }
        if refused.iter().all(Option::is_none) {
            return self.forward(to, parts, body).await;
        }
        let kept: Vec<Value> = records
            .iter()
            .zip(&refused)
            .filter(|(_, refused)| refused.is_none())
            .map(|(record, _)| record.clone())
            .collect();
        let mut written = Vec::new().into_iter();
        let mut encryption = Value::Null;
        if !kept.is_empty() {
            input["Records"] = Value::Array(kept);
            let response = self
                .forward(to, parts, Bytes::from(input.to_string()))
                .await?;
            if !response.status().is_success() {
                return Ok(response);
            }
            let output = response_json(&response);
            encryption = output["EncryptionType"].clone();
            written = output["Records"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter();
        }
        let mut failed = 0;
        let mut results = Vec::with_capacity(records.len());
        for refused in refused {
            let result = match refused {
                Some(message) => json!({
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": message,
                }),
                None => written.next().unwrap_or(Value::Null),
            };
            // kinesis-mock writes `"ErrorCode": null` for stored entries.
            if result.get("ErrorCode").is_some_and(|code| !code.is_null()) {
                failed += 1;
            }
            results.push(result);
        }
        let mut output = json!({ "FailedRecordCount": failed, "Records": results });
        if !encryption.is_null() {
            output["EncryptionType"] = encryption;
        }
        Ok(aws_json(StatusCode::OK, &output))
    }

    async fn shard_of(&self, parts: &Parts, stream: &str, input: &Value) -> Option<String> {
        let ranges = self.shard_map(parts, stream).await?;
        let hash = limits::hash_key(
            input["PartitionKey"].as_str().unwrap_or_default(),
            input["ExplicitHashKey"].as_str(),
        );
        limits::shard_for(&ranges, hash).map(str::to_owned)
    }

    /// The stream's open shards, from a recent ListShards (asked with the
    /// caller's own headers, so the backend sees the same credentials).
    async fn shard_map(&self, parts: &Parts, stream: &str) -> Option<Vec<ShardRange>> {
        if let Some(ranges) = lock(&self.limits).shard_map(stream, Instant::now()) {
            return Some(ranges.to_vec());
        }
        let mut list = parts.clone();
        list.headers.insert(
            "x-amz-target",
            HeaderValue::from_static("Kinesis_20131202.ListShards"),
        );
        let body = json!({ "StreamName": stream }).to_string();
        let response = self
            .forward(self.backends.kinesis, &list, Bytes::from(body))
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let output = response_json(&response);
        let ranges: Vec<ShardRange> = output["Shards"]
            .as_array()?
            .iter()
            .filter(|shard| shard["SequenceNumberRange"]["EndingSequenceNumber"].is_null())
            .filter_map(|shard| {
                Some(ShardRange {
                    shard: shard["ShardId"].as_str()?.to_owned(),
                    start: shard["HashKeyRange"]["StartingHashKey"]
                        .as_str()?
                        .parse()
                        .ok()?,
                    end: shard["HashKeyRange"]["EndingHashKey"]
                        .as_str()?
                        .parse()
                        .ok()?,
                })
            })
            .collect();
        lock(&self.limits).set_shard_map(stream, ranges.clone(), Instant::now());
        Some(ranges)
    }

    fn admin(&self, parts: &Parts, body: &[u8]) -> Response<Body> {
        let path = parts.uri.path();
        match (&parts.method, path) {
            (&Method::GET, "/__rewind/health") => aws_json(
                StatusCode::OK,
                &json!({ "functions": self.functions, "shard_limits": lock(&self.limits).enabled }),
            ),
            (&Method::GET, "/__rewind/faults") => aws_json(
                StatusCode::OK,
                &serde_json::to_value(lock(&self.faults).rules()).unwrap_or(Value::Null),
            ),
            (&Method::POST, "/__rewind/faults") => match serde_json::from_slice::<Fault>(body) {
                Ok(fault) => {
                    lock(&self.faults).add(fault);
                    aws_json(StatusCode::OK, &json!({}))
                }
                Err(error) => {
                    json_error(StatusCode::BAD_REQUEST, "InvalidFault", &error.to_string())
                }
            },
            (&Method::DELETE, "/__rewind/faults") => {
                match query_param(parts.uri.query(), "matching") {
                    Some(needle) => lock(&self.faults).remove_matching(&needle),
                    None => lock(&self.faults).clear(),
                }
                aws_json(StatusCode::OK, &json!({}))
            }
            (&Method::PUT, "/__rewind/shard-limits") => {
                match serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v["enabled"].as_bool())
                {
                    Some(enabled) => {
                        lock(&self.limits).enabled = enabled;
                        aws_json(StatusCode::OK, &json!({ "enabled": enabled }))
                    }
                    None => json_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidLimits",
                        "expected {\"enabled\": bool}",
                    ),
                }
            }
            _ => json_error(StatusCode::NOT_FOUND, "UnknownAdminPath", path),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The state stays consistent between statements; a panicked holder
    // leaves nothing half-written worth refusing service over.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Names the call: its signing service (from `X-Amz-Target` or the
/// credential scope) and its operation.
fn classify(parts: &Parts, body: &[u8]) -> Call {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let scope: Vec<&str> = header("authorization")
        .and_then(|auth| auth.split("Credential=").nth(1))
        .map(|credential| {
            credential
                .split([',', ' '])
                .next()
                .unwrap_or("")
                .split('/')
                .collect()
        })
        .unwrap_or_default();
    let region = scope.get(2).copied().unwrap_or("us-east-1").to_owned();
    let target = header("x-amz-target");
    let mut service = scope.get(3).copied().unwrap_or("").to_owned();
    if target.is_some_and(|t| t.starts_with(KINESIS_TARGET)) {
        service = "kinesis".to_owned();
    } else if service.is_empty() && lambda::invoke_function(parts.uri.path()).is_some() {
        service = "lambda".to_owned();
    }
    let operation = if let Some(target) = target {
        target.rsplit('.').next().unwrap_or(target).to_owned()
    } else if service == "lambda" && lambda::invoke_function(parts.uri.path()).is_some() {
        "Invoke".to_owned()
    } else if let Some(action) = query_param(parts.uri.query(), "Action")
        .or_else(|| query_param(std::str::from_utf8(body).ok(), "Action"))
    {
        action
    } else if service == "s3" {
        s3_operation(parts).to_owned()
    } else {
        parts.method.as_str().to_owned()
    };
    Call {
        service,
        operation,
        region,
    }
}

/// The S3 operation of a path-style request, as far as faults need it.
fn s3_operation(parts: &Parts) -> &'static str {
    let has_key = parts
        .uri
        .path()
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    match (&parts.method, has_key) {
        (&Method::GET, true) => "GetObject",
        (&Method::PUT, true) if parts.headers.contains_key("x-amz-copy-source") => "CopyObject",
        (&Method::PUT, true) => "PutObject",
        (&Method::DELETE, true) => "DeleteObject",
        (&Method::HEAD, true) => "HeadObject",
        (&Method::GET, false) => "ListObjectsV2",
        (&Method::PUT, false) => "CreateBucket",
        (&Method::DELETE, false) => "DeleteBucket",
        (&Method::HEAD, false) => "HeadBucket",
        (&Method::POST, false) => "DeleteObjects",
        _ => "Unknown",
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn stream_name(input: &Value) -> Option<String> {
    if let Some(name) = input["StreamName"].as_str() {
        return Some(name.to_owned());
    }
    let arn = input["StreamARN"].as_str()?;
    arn.rsplit_once("stream/").map(|(_, name)| name.to_owned())
}

/// Bytes a put record counts against its shard: data plus partition key.
fn put_bytes(record: &Value) -> usize {
    let data = record["Data"].as_str().map_or(0, |b64| b64.len() / 4 * 3);
    data + record["PartitionKey"].as_str().map_or(0, str::len)
}

/// Bytes a returned record counts against its shard's read budget.
fn record_bytes(record: &Value) -> usize {
    put_bytes(record)
}

fn response_json(response: &Response<Body>) -> Value {
    // Full<Bytes> holds the body; peeking at it doesn't consume it.
    let bytes = full_bytes(response.body());
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn full_bytes(body: &Body) -> Bytes {
    use hyper::body::Body as _;
    let mut body = body.clone();
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    let mut out = Vec::new();
    while let std::task::Poll::Ready(Some(Ok(frame))) =
        std::pin::Pin::new(&mut body).poll_frame(&mut context)
    {
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Bytes::from(out)
}

fn aws_json(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    response
}

/// An awsJson error, the shape Kinesis, DynamoDB, SQS and Step Functions use.
fn json_error(status: StatusCode, error_type: &str, message: &str) -> Response<Body> {
    aws_json(status, &json!({ "__type": error_type, "message": message }))
}

/// Kinesis's answer to a call over a shard's limit.
fn throughput_exceeded(message: &str) -> Response<Body> {
    json_error(
        StatusCode::BAD_REQUEST,
        "ProvisionedThroughputExceededException",
        message,
    )
}

fn fault_response(kind: FaultKind, call: &Call) -> Result<Response<Body>, Dropped> {
    let s3 = |status: StatusCode, code: &str, message: &str| {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        );
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/xml"));
        response
    };
    Ok(match (kind, call.service.as_str()) {
        (FaultKind::Drop, _) => return Err(Dropped("fault injected")),
        (FaultKind::Throttle, "kinesis") => {
            throughput_exceeded("Rate exceeded for shard (injected fault).")
        }
        (FaultKind::Throttle, "lambda") => lambda::error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            json!({"Type": "User", "Message": "Rate exceeded", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}),
        ),
        (FaultKind::Throttle, "s3") => s3(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ),
        // Answered by `Proxy::unprocessed` before this; a batch of which
        // nothing is written is a throttle.
        (FaultKind::Throttle | FaultKind::Unprocessed, _) => json_error(
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate exceeded",
        ),
        (FaultKind::ServerError, "s3") => s3(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        (FaultKind::ServerError, "lambda") => lambda::error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            json!({"Type": "Service", "Message": "injected fault"}),
        ),
        (FaultKind::ServerError, _) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "injected fault",
        ),
        (FaultKind::Observe, _) => unreachable!("observing rules inject nothing"),
    })
}
