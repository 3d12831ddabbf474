//! Fault injection: rules set by tests through the admin path, each matching
//! a service and an operation (and optionally a string in the request), that
//! answer a throttle, a 500, or drop the connection, or leave part of a
//! DynamoDB batch write unprocessed, for a number of calls or at a rate
//! (from a seed, when one is given). Each rule counts the faults it
//! injected, so a test can report what it survived; an observing rule
//! injects nothing and counts the calls it matches, so a test can tell how
//! often a system under test made one (the steps of a state machine whose
//! child executions keep no history here).

use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Body, Call, Dropped, Proxy, lock};

/// What an injected fault does to the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The service's own throttling error (Kinesis
    /// `ProvisionedThroughputExceededException`, Lambda
    /// `TooManyRequestsException`, S3 `SlowDown`, otherwise
    /// `ThrottlingException`).
    Throttle,
    /// HTTP 500 `InternalFailure` (S3: `InternalError`).
    ServerError,
    /// The connection is closed without an answer.
    Drop,
    /// DynamoDB `BatchWriteItem` only: the first half of each table's items
    /// is written and the rest comes back in `UnprocessedItems`, as under a
    /// table's throughput limit; a batch of which nothing would be written
    /// is refused whole with `ProvisionedThroughputExceededException`, as
    /// DynamoDB does.
    /// <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html>
    Unprocessed,
    /// Nothing: the call goes on untouched, counted in `injected`. Never
    /// used up, never in the way of another rule.
    Observe,
}

/// How often a rule fires.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frequency {
    /// The next `n` matching calls.
    Count(u32),
    /// Each matching call with this probability (0 to 1).
    Rate(f64),
}

/// One fault rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Signing name of the service: `kinesis`, `lambda`, `s3`, `dynamodb`,
    /// `sqs`, `states`.
    pub service: String,
    /// Operation name as in the API reference (`GetRecords`, `Invoke`, …);
    /// `*` matches every operation.
    pub operation: String,
    pub kind: FaultKind,
    pub frequency: Frequency,
    /// When set, only requests whose path or body contains this string (a
    /// stream or function name) match, so concurrent tests don't disturb each
    /// other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching: Option<String>,
    /// Further strings the request must contain too (a shard's objects of
    /// one stream's archive), for a fault that concurrent calls of the same
    /// test must not share.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub and_matching: Vec<String>,
    /// Seeds a rate rule's draws, so that a run can be told apart from
    /// another by its seed (calls still arrive in the order they come).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Faults this rule injected so far (set by the endpoint).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub injected: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Fault {
    /// A rule for the next `count` calls of `operation`.
    pub fn count(service: &str, operation: &str, kind: FaultKind, count: u32) -> Self {
        Fault {
            service: service.to_owned(),
            operation: operation.to_owned(),
            kind,
            frequency: Frequency::Count(count),
            matching: None,
            and_matching: Vec::new(),
            seed: None,
            injected: 0,
        }
    }

    /// A rule firing on each call of `operation` with probability `rate`.
    pub fn rate(service: &str, operation: &str, kind: FaultKind, rate: f64) -> Self {
        Fault {
            frequency: Frequency::Rate(rate),
            ..Fault::count(service, operation, kind, 0)
        }
    }

    /// A rule counting the calls of `operation` (restricted as any rule).
    pub fn observe(service: &str, operation: &str) -> Self {
        Fault::count(service, operation, FaultKind::Observe, 0)
    }

    /// Restricts the rule to requests mentioning `needle`.
    pub fn matching(mut self, needle: &str) -> Self {
        self.matching = Some(needle.to_owned());
        self
    }

    /// Restricts the rule further, to requests mentioning `needle` as well.
    pub fn and_matching(mut self, needle: &str) -> Self {
        self.and_matching.push(needle.to_owned());
        self
    }

    /// Draws a rate rule's faults from `seed`.
    pub fn seeded(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    fn applies_to(&self, service: &str, operation: &str) -> bool {
        self.service == service
            && (self.operation == "*" || self.operation == operation)
            && (self.kind != FaultKind::Unprocessed || operation == "BatchWriteItem")
    }

    fn matches(&self, service: &str, operation: &str, path: &str, body: &[u8]) -> bool {
        self.applies_to(service, operation)
            && self
                .matching
                .iter()
                .chain(&self.and_matching)
                .all(|needle| path.contains(needle.as_str()) || contains(body, needle.as_bytes()))
    }
}

/// A rule in force and its draws.
#[derive(Debug)]
struct Rule {
    fault: Fault,
    rng: fastrand::Rng,
}

/// The rules in force; the first that matches and fires decides.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<Rule>,
}

impl Faults {
    pub fn add(&mut self, fault: Fault) {
        let rng = fault
            .seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        self.rules.push(Rule { fault, rng });
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Removes the rules restricted to `needle` (one test's rules), leaving
    /// those of tests running beside it.
    pub fn remove_matching(&mut self, needle: &str) {
        self.rules
            .retain(|rule| rule.fault.matching.as_deref() != Some(needle));
    }

    /// The rules in force, each with the faults it injected.
    pub fn rules(&self) -> Vec<Fault> {
        self.rules.iter().map(|rule| rule.fault.clone()).collect()
    }

    /// The fault to inject into this call, if any (a count rule is used up).
    pub fn take(
        &mut self,
        service: &str,
        operation: &str,
        path: &str,
        body: &[u8],
    ) -> Option<FaultKind> {
        for Rule { fault, .. } in &mut self.rules {
            if fault.kind == FaultKind::Observe && fault.matches(service, operation, path, body) {
                fault.injected += 1;
            }
        }
        let index = self.rules.iter_mut().position(|Rule { fault, rng }| {
            fault.kind != FaultKind::Observe
                && fault.matches(service, operation, path, body)
                && match fault.frequency {
                    Frequency::Count(n) => n > 0,
                    Frequency::Rate(rate) => rng.f64() < rate,
                }
        })?;
        let rule = &mut self.rules[index].fault;
        rule.injected += 1;
        let kind = rule.kind;
        if let Frequency::Count(n) = &mut rule.frequency {
            *n -= 1;
            if *n == 0 {
                self.rules.remove(index);
            }
        }
        Some(kind)
    }
}

/// A `BatchWriteItem` request cut in two: the request for the first half
/// of each table's items, and the other halves by table (what comes back
/// unprocessed). `None` for a body that isn't a batch write, or one of
/// which nothing would be written.
pub(super) fn split_batch_write(body: &[u8]) -> Option<(Value, Map<String, Value>)> {
    let mut request: Value = serde_json::from_slice(body).ok()?;
    let tables = request.get_mut("RequestItems")?.as_object_mut()?;
    let mut unprocessed = Map::new();
    let mut kept = 0;
    for (table, items) in tables.iter_mut() {
        let items = items.as_array_mut()?;
        let rest = items.split_off(items.len() / 2);
        kept += items.len();
        if !rest.is_empty() {
            unprocessed.insert(table.clone(), Value::Array(rest));
        }
    }
    tables.retain(|_, items| items.as_array().is_some_and(|items| !items.is_empty()));
    (kept > 0).then_some((request, unprocessed))
}

impl Proxy {
    /// The fault to inject into this call, if any. A GetRecords call names
    /// no stream, only its opaque iterator: the stream the iterator was
    /// issued for (the shard limits watch the answers that hand iterators
    /// out) is matched as if the path held it, so a rule restricted to one
    /// stream reaches that stream's reads too.
    pub(super) fn fault_for(&self, call: &Call, path: &str, body: &[u8]) -> Option<FaultKind> {
        let mut haystack = path.to_owned();
        if call.service == "kinesis" && call.operation == "GetRecords" {
            let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if let Some(stream) = input["ShardIterator"].as_str().and_then(|iterator| {
                lock(&self.limits)
                    .iterator_stream(iterator)
                    .map(str::to_owned)
            }) {
                haystack.push(' ');
                haystack.push_str(&stream);
            }
        }
        lock(&self.faults).take(&call.service, &call.operation, &haystack, body)
    }

    /// Answers a `BatchWriteItem` with part of it unprocessed: the first
    /// halves are written by the backend, the rest is added to the
    /// `UnprocessedItems` of its answer.
    pub(super) async fn unprocessed(
        &self,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Body>, Dropped> {
        let Some((request, mut unprocessed)) = split_batch_write(&body) else {
            return Ok(super::json_error(
                StatusCode::BAD_REQUEST,
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded (injected fault).",
            ));
        };
        let response = self
            .forward(self.backends.moto, parts, Bytes::from(request.to_string()))
            .await?;
        if !response.status().is_success() {
            return Ok(response);
        }
        let mut output = super::response_json(&response);
        if let Some(Value::Object(left)) = output.get("UnprocessedItems") {
            for (table, items) in left {
                if let (Some(Value::Array(ours)), Value::Array(theirs)) =
                    (unprocessed.get_mut(table), items)
                {
                    ours.extend(theirs.iter().cloned());
                } else {
                    unprocessed.insert(table.clone(), items.clone());
                }
            }
        }
        output["UnprocessedItems"] = Value::Object(unprocessed);
        let (mut head, _) = response.into_parts();
        // The body changed: its length and the checksum DynamoDB sends
        // (which the SDK verifies) no longer hold.
        head.headers.remove("content-length");
        head.headers.remove("x-amz-crc32");
        Ok(Response::from_parts(
            head,
            Full::new(Bytes::from(output.to_string())),
        ))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn count_rules_fire_then_expire_and_match_narrowly() {
        let mut faults = Faults::default();
        faults.add(Fault::count("kinesis", "GetRecords", FaultKind::Throttle, 2).matching("s1"));
        assert_eq!(faults.take("kinesis", "PutRecord", "/", b"s1"), None);
        assert_eq!(
            faults.take("kinesis", "GetRecords", "/", b"{\"x\":\"s2\"}"),
            None
        );
        assert_eq!(
            faults.take("kinesis", "GetRecords", "/", b"s1"),
            Some(FaultKind::Throttle)
        );
        assert_eq!(
            faults.take("kinesis", "GetRecords", "/", b"s1"),
            Some(FaultKind::Throttle)
        );
        assert_eq!(faults.take("kinesis", "GetRecords", "/", b"s1"), None);
        assert!(faults.rules().is_empty());
    }

    #[test]
    fn every_needle_must_match() {
        let mut faults = Faults::default();
        faults.add(
            Fault::count("s3", "PutObject", FaultKind::ServerError, 1)
                .matching("stream=orders")
                .and_matching("shardId-1"),
        );
        assert_eq!(
            faults.take("s3", "PutObject", "/b/stream=orders/shardId-2/k", b""),
            None
        );
        assert_eq!(faults.take("s3", "PutObject", "/b/shardId-1/k", b""), None);
        assert_eq!(
            faults.take("s3", "PutObject", "/b/stream=orders/shardId-1/k", b""),
            Some(FaultKind::ServerError)
        );
        assert!(faults.rules().is_empty());
    }

    #[test]
    fn seeded_rate_rules_repeat_their_draws_and_count_what_they_injected() {
        let draws = |seed| {
            let mut faults = Faults::default();
            faults.add(Fault::rate("kinesis", "GetRecords", FaultKind::Throttle, 0.3).seeded(seed));
            let fired: Vec<bool> = (0..200)
                .map(|_| faults.take("kinesis", "GetRecords", "/", b"").is_some())
                .collect();
            let injected = faults.rules()[0].injected;
            assert_eq!(injected, fired.iter().filter(|f| **f).count() as u64);
            fired
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let fired = draws(7).iter().filter(|f| **f).count();
        assert!(
            (30..=90).contains(&fired),
            "{fired} of 200 at a rate of 0.3"
        );
    }

    #[test]
    fn a_test_removes_its_own_rules_only() {
        let mut faults = Faults::default();
        faults.add(Fault::rate("s3", "*", FaultKind::ServerError, 0.1).matching("storm-1"));
        faults.add(Fault::rate("s3", "*", FaultKind::Throttle, 0.1).matching("other"));
        faults.remove_matching("storm-1");
        let left = faults.rules();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].matching.as_deref(), Some("other"));
    }

    #[test]
    fn unprocessed_items_apply_to_batch_writes_only() {
        let mut faults = Faults::default();
        faults.add(Fault::rate("dynamodb", "*", FaultKind::Unprocessed, 1.0));
        assert_eq!(faults.take("dynamodb", "PutItem", "/", b""), None);
        assert_eq!(
            faults.take("dynamodb", "BatchWriteItem", "/", b""),
            Some(FaultKind::Unprocessed)
        );
    }

    #[test]
    fn a_batch_write_keeps_the_first_half_of_each_table() {
        let put = |n: u32| json!({"PutRequest": {"Item": {"pk": {"S": n.to_string()}}}});
        let body = json!({"RequestItems": {
            "a": [put(1), put(2), put(3)],
            "b": [put(4)],
        }});
        let (request, unprocessed) = split_batch_write(body.to_string().as_bytes()).unwrap();
        assert_eq!(request, json!({"RequestItems": {"a": [put(1)]}}));
        assert_eq!(
            Value::Object(unprocessed),
            json!({"a": [put(2), put(3)], "b": [put(4)]})
        );
        let single = json!({"RequestItems": {"a": [put(1)]}});
        assert_eq!(split_batch_write(single.to_string().as_bytes()), None);
        assert_eq!(split_batch_write(b"not json"), None);
    }

    #[test]
    fn rate_rules_fire_always_or_never_at_the_extremes() {
        let mut faults = Faults::default();
        faults.add(Fault::rate("s3", "*", FaultKind::ServerError, 1.0));
        faults.add(Fault::rate("lambda", "*", FaultKind::Drop, 0.0));
        assert_eq!(
            faults.take("s3", "GetObject", "/b/k", b""),
            Some(FaultKind::ServerError)
        );
        assert_eq!(faults.take("lambda", "Invoke", "/", b""), None);
        assert_eq!(faults.rules().len(), 2, "rate rules stay");
    }

    #[test]
    fn observing_rules_count_matching_calls_and_inject_nothing() {
        let mut faults = Faults::default();
        faults.add(Fault::observe("lambda", "Invoke").matching("\"step\""));
        faults.add(Fault::count("lambda", "Invoke", FaultKind::Throttle, 1));
        let step = br#"{"action": "step"}"#;
        // The rule after it still fires, and the call is counted.
        assert_eq!(
            faults.take("lambda", "Invoke", "/", step),
            Some(FaultKind::Throttle)
        );
        assert_eq!(faults.take("lambda", "Invoke", "/", step), None);
        assert_eq!(faults.take("lambda", "Invoke", "/", b"{}"), None);
        let rules = faults.rules();
        assert_eq!(rules.len(), 1, "observing rules are never used up");
        assert_eq!((rules[0].kind, rules[0].injected), (FaultKind::Observe, 2));
    }
}
