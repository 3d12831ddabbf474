//! The archiver's own metrics, one CloudWatch embedded-metric-format (EMF)
//! line per invocation, which CloudWatch Logs turns into metrics in the
//! `KinesisRewind` namespace with the dimension `StreamName` (the names the
//! template's alarms and dashboard use). Spec:
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.
//!
//! The line is written with `serde_json` rather than through a crate: AWS
//! publishes no EMF library for Rust, and the community one
//! (`metrics_cloudwatch_embedded`) is a process-wide recorder for the
//! `metrics` facade, with its own flush cycle and, for Lambda, `lambda_http`
//! and `tower` besides; five numbers a line don't need any of that. The line
//! holds counts and a stream name only, never a payload or a key.

use serde_json::{Map, Value, json};

use crate::model::record::ArrivalTime;

pub const NAMESPACE: &str = "KinesisRewind";
pub const DIMENSION: &str = "StreamName";

/// What one invocation stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveMetrics {
    /// Record lines written to S3 archive objects (user records when the
    /// archive deaggregates, Kinesis records as delivered otherwise).
    pub records_archived: u64,
    /// Bytes of the S3 objects written, compressed, as stored.
    pub bytes_archived: u64,
    /// S3 archive objects written.
    pub objects_written: u64,
    /// Items the DynamoDB archive accepted.
    pub items_written: u64,
    /// The arrival time of the newest record written to S3; `None` when
    /// nothing was written.
    pub newest_arrival: Option<ArrivalTime>,
}

impl ArchiveMetrics {
    /// The EMF document for `stream`, stamped `now` (epoch milliseconds,
    /// which is also what the newest record's age is measured against).
    /// `NewestRecordAgeMs` is left out when nothing was stored: an age of
    /// nothing would read as "caught up".
    pub fn emf(&self, stream: &str, now_epoch_millis: i64) -> Value {
        let mut metrics = vec![
            ("RecordsArchived", "Count", self.records_archived),
            ("BytesArchived", "Bytes", self.bytes_archived),
            ("ObjectsWritten", "Count", self.objects_written),
            ("ItemsWritten", "Count", self.items_written),
        ];
        if let Some(newest) = self.newest_arrival {
            let age = (now_epoch_millis - newest.epoch_millis()).max(0);
            metrics.push(("NewestRecordAgeMs", "Milliseconds", age as u64));
        }
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": now_epoch_millis,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [[DIMENSION]],
                    "Metrics": metrics
                        .iter()
                        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
                        .collect::<Vec<_>>(),
                }],
            }),
        );
        root.insert(DIMENSION.into(), Value::from(stream));
        for (name, _, value) in metrics {
            root.insert(name.into(), Value::from(value));
        }
        Value::Object(root)
    }

    /// The document as one log line (no newline).
    pub fn emf_line(&self, stream: &str, now_epoch_millis: i64) -> String {
        self.emf(stream, now_epoch_millis).to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Checks `line` against the EMF specification's rules (page in the
    /// module's doc) and gives back the metric values by name.
    pub(crate) fn parse_emf(line: &str) -> std::collections::BTreeMap<String, f64> {
        // "The LogEvent message MUST be a valid JSON object with no
        // additional data at the beginning or end."
        let root: Value = serde_json::from_str(line).expect("one JSON object, nothing around it");
        let root = root.as_object().expect("the root node is an object");
        let aws = root["_aws"].as_object().expect("_aws is an object");
        // Timestamp: a number, milliseconds after 1970-01-01T00:00:00Z.
        assert!(aws["Timestamp"].is_i64(), "Timestamp is a whole number");
        let directives = aws["CloudWatchMetrics"]
            .as_array()
            .expect("CloudWatchMetrics is an array");
        let mut values = std::collections::BTreeMap::new();
        for directive in directives {
            let namespace = directive["Namespace"].as_str().expect("Namespace");
            assert!((1..=255).contains(&namespace.len()));
            for set in directive["Dimensions"].as_array().expect("Dimensions") {
                let set = set.as_array().expect("a DimensionSet is an array");
                assert!(set.len() <= 30, "at most 30 dimensions a set");
                for name in set {
                    // A dimension's target member is a string.
                    let name = name.as_str().expect("dimension name");
                    assert!(
                        root[name].is_string(),
                        "dimension {name} has a string value"
                    );
                }
            }
            let metrics = directive["Metrics"].as_array().expect("Metrics");
            assert!(metrics.len() <= 100, "at most 100 metrics a directive");
            let mut names = BTreeSet::new();
            for metric in metrics {
                let name = metric["Name"].as_str().expect("Name");
                assert!(names.insert(name), "{name} defined once");
                if let Some(unit) = metric.get("Unit") {
                    assert!(
                        [
                            "Seconds",
                            "Microseconds",
                            "Milliseconds",
                            "Bytes",
                            "Kilobytes",
                            "Megabytes",
                            "Count",
                            "None"
                        ]
                        .contains(&unit.as_str().expect("Unit is a string")),
                        "{unit} is a CloudWatch unit"
                    );
                }
                // The target member is a number (or an array of numbers).
                let value = root
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} has a target member"));
                values.insert(name.to_owned(), value.as_f64().expect("a number"));
            }
        }
        values
    }

    #[test]
    fn the_line_is_emf_in_the_templates_namespace_and_dimension() {
        let metrics = ArchiveMetrics {
            records_archived: 4,
            bytes_archived: 512,
            objects_written: 1,
            items_written: 7,
            newest_arrival: Some(ArrivalTime::from_epoch_millis(1_700_000_000_000)),
        };
        let line = metrics.emf_line("orders", 1_700_000_001_250);
        assert!(!line.contains('\n'), "one line");
        let values = parse_emf(&line);
        assert_eq!(
            values,
            [
                ("BytesArchived", 512.0),
                ("ItemsWritten", 7.0),
                ("NewestRecordAgeMs", 1250.0),
                ("ObjectsWritten", 1.0),
                ("RecordsArchived", 4.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
        );
        let root: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(root["StreamName"], "orders");
        assert_eq!(root["_aws"]["Timestamp"], 1_700_000_001_250_i64);
        let directive = &root["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "KinesisRewind");
        assert_eq!(directive["Dimensions"], json!([["StreamName"]]));
        // Every name the template's dashboard and alarms read is here.
        let template = include_str!("../../../../template.yaml");
        for name in values.keys() {
            assert!(
                template.contains(&format!("\"KinesisRewind\", \"{name}\"")),
                "the template reads {name}"
            );
        }
    }

    #[test]
    fn no_age_when_nothing_was_stored() {
        let values = parse_emf(&ArchiveMetrics::default().emf_line("orders", 5));
        assert!(!values.contains_key("NewestRecordAgeMs"));
        assert_eq!(values["RecordsArchived"], 0.0);
    }
}
