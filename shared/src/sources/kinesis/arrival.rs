//! `ApproximateArrivalTimestamp` as Kinesis sent it.
//!
//! Kinesis sends epoch seconds with three decimals (`1732237199.869`). The
//! SDK's awsJson 1.1 codec parses that text as an `f64` and builds its
//! `DateTime` with `DateTime::from_secs_f64`, so the sub-second part is the
//! binary fraction nearest to `.869`: often `.868999…`, whose nanoseconds
//! `DateTime::to_millis` truncates to `.868`. At today's epoch an `f64` is
//! off by at most ~120 ns, far less than half a millisecond, so rounding the
//! nanoseconds to the nearest millisecond gives back exactly what was sent.

use aws_sdk_kinesis::primitives::DateTime;

use crate::model::record::ArrivalTime;

const NANOS_PER_MILLI: i64 = 1_000_000;

/// The millisecond Kinesis sent, from the SDK's parse of it.
pub(crate) fn arrival_time(at: &DateTime) -> ArrivalTime {
    // `secs` is the floor and the nanoseconds count up from it, for times
    // before the epoch too, so the rounding is the same on both sides.
    let nanos = i64::from(at.subsec_nanos());
    let millis = (nanos + NANOS_PER_MILLI / 2) / NANOS_PER_MILLI;
    ArrivalTime::from_epoch_millis(at.secs().saturating_mul(1000).saturating_add(millis))
}

#[cfg(test)]
mod tests {
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use proptest::prelude::*;

    use super::super::{KinesisSource, ShardSource};

    /// The wire form Kinesis writes: epoch seconds, three decimals.
    fn wire(millis: i64) -> String {
        format!("{}.{:03}", millis.div_euclid(1000), millis.rem_euclid(1000))
    }

    /// One GetRecords answer holding a record per arrival time, read back
    /// through the SDK's own awsJson 1.1 deserializer and the shard reader.
    fn read_back(arrivals: &[i64]) -> Vec<i64> {
        let records: Vec<String> = arrivals
            .iter()
            .enumerate()
            .map(|(i, &millis)| {
                format!(
                    r#"{{"SequenceNumber":"4959{i:052}","ApproximateArrivalTimestamp":{},"Data":"AA==","PartitionKey":"k"}}"#,
                    wire(millis)
                )
            })
            .collect();
        let body = format!(
            r#"{{"Records":[{}],"NextShardIterator":"next","MillisBehindLatest":0}}"#,
            records.join(",")
        );
        let rule = mock!(aws_sdk_kinesis::Client::get_records)
            .sequence()
            .http_status(200, Some(body))
            .build();
        let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&rule]);
        let source = KinesisSource::new(client, "arn:aws:kinesis:us-east-1:1:stream/s");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let page = runtime
            .block_on(source.records("shardId-000000000000", "it", 10_000))
            .unwrap();
        page.records
            .iter()
            .map(|r| r.approximate_arrival_timestamp.epoch_millis())
            .collect()
    }

    /// Issue 12, point 7: `…745.869` on the wire came out `…745.868`. Every
    /// millisecond of two seconds of the last decade, each one read back as
    /// sent.
    #[test]
    fn every_millisecond_of_a_second_reads_back_as_sent() {
        for base in [1_732_237_199_000_i64, 1_732_237_745_000] {
            let arrivals: Vec<i64> = (base..base + 1000).collect();
            assert_eq!(read_back(&arrivals), arrivals);
        }
        // The old truncation got these wrong (the f64 lies just below).
        let arrivals = [1_732_237_199_869, 1_732_237_745_869];
        assert_eq!(read_back(&arrivals), arrivals);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any arrival time from 1970 to 2100, a page of them at a time.
        #[test]
        fn arrival_times_are_exact_to_the_millisecond(
            arrivals in proptest::collection::vec(0_i64..4_102_444_800_000, 1..500)
        ) {
            prop_assert_eq!(read_back(&arrivals), arrivals);
        }
    }
}
