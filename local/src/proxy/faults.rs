//! Fault injection: rules set by tests through the admin path, each matching
//! a service and an operation (and optionally a string in the request), that
//! answer a throttle, a 500, or drop the connection, for a number of calls or
//! at a rate.

use serde::{Deserialize, Serialize};

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
    /// The call is answered as usual, `ms` later: a slow backend. Kinesis
    /// calls are delayed after the endpoint's shard limits admitted them,
    /// so a delayed GetRecords is charged when it answers, as on a shard.
    Delay { ms: u64 },
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
        }
    }

    /// A rule firing on each call of `operation` with probability `rate`.
    pub fn rate(service: &str, operation: &str, kind: FaultKind, rate: f64) -> Self {
        Fault {
            frequency: Frequency::Rate(rate),
            ..Fault::count(service, operation, kind, 0)
        }
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
}

/// The rules in force; the first that matches and fires decides.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<Fault>,
}

impl Faults {
    pub fn add(&mut self, fault: Fault) {
        self.rules.push(fault);
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    pub fn rules(&self) -> &[Fault] {
        &self.rules
    }

    /// The fault to inject into this call, if any (a count rule is used up).
    pub fn take(
        &mut self,
        service: &str,
        operation: &str,
        path: &str,
        body: &[u8],
    ) -> Option<FaultKind> {
        let index = self.rules.iter().position(|rule| {
            rule.service == service
                && (rule.operation == "*" || rule.operation == operation)
                && rule
                    .matching
                    .iter()
                    .chain(&rule.and_matching)
                    .all(|needle| {
                        path.contains(needle.as_str()) || contains(body, needle.as_bytes())
                    })
                && match rule.frequency {
                    Frequency::Count(n) => n > 0,
                    Frequency::Rate(rate) => fastrand::f64() < rate,
                }
        })?;
        let rule = &mut self.rules[index];
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
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
}
