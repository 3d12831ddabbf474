//! KPL aggregates split into their user records on the way to a sink that
//! keys or stores user records, and put back together on the way to a
//! function, which the mapping hands the Kinesis record, aggregate and all.

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::model::record::{Aggregate, Record};
use crate::model::seqno::SequenceNumber;
use crate::request::RequestError;
use crate::sources::{BoxFuture, Pages, SourceError};

/// User records for keys and lines; a corrupt aggregate is kept whole
/// rather than dropped: the archive never loses what the stream held. The
/// first user record of each aggregate keeps the Kinesis record
/// ([`Record::aggregate`]), so a replay can deliver it whole.
pub fn deaggregate_all(records: &[Record]) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        match record.clone().deaggregate() {
            Ok(mut users) => {
                if record.is_aggregated()
                    && let Some(first) = users.first_mut()
                {
                    first.aggregate = Some(Box::new(Aggregate {
                        partition_key: record.partition_key.clone(),
                        explicit_hash_key: record.explicit_hash_key.clone(),
                        data: record.data.clone(),
                    }));
                }
                out.extend(users);
            }
            Err(error) => {
                warn!(
                    error = &error as &(dyn std::error::Error + 'static),
                    "keeping a corrupt KPL aggregate as received"
                );
                out.push(record.clone());
            }
        }
    }
    out
}

/// What a function target is handed when a source holds user records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Deliver {
    /// One event record per Kinesis record, as the mapping delivers them: a
    /// KPL aggregate whole (its bytes, its own partition key, `eventID`
    /// `<shardId>:<sequenceNumber>`). A source that can't rebuild an
    /// aggregate fails the replay naming `deliver`.
    #[default]
    KinesisRecords,
    /// Each user record its own event record, with the user's partition key
    /// and data and `eventID` `<shardId>:<sequenceNumber>:<subSequenceNumber>`,
    /// so that no two share one: for sources that keep user records only.
    UserRecords,
}

impl Deliver {
    pub const ACCEPTED: &str = "KINESIS_RECORDS (the default: each Kinesis record whole, KPL aggregates included, as the mapping delivers them), USER_RECORDS (each user record of an aggregate its own event record)";
}

/// A shard's pages as a function target takes them ([`Deliver`]): user
/// records of an aggregate the source kept whole become that Kinesis
/// record again, once, where its first user record was.
pub struct KinesisRecords<'a> {
    pages: Box<dyn Pages + 'a>,
    deliver: Deliver,
    /// The aggregate last rebuilt: its other user records are inside it.
    rebuilt: Option<SequenceNumber>,
}

impl<'a> KinesisRecords<'a> {
    pub fn new(pages: Box<dyn Pages + 'a>, deliver: Deliver) -> Self {
        Self {
            pages,
            deliver,
            rebuilt: None,
        }
    }

    fn whole(&mut self, records: Vec<Record>) -> Result<Vec<Record>, SourceError> {
        let mut out = Vec::with_capacity(records.len());
        for mut record in records {
            if record.sub_sequence_number.is_none() {
                out.push(record);
                continue;
            }
            if self.rebuilt.as_ref() == Some(&record.sequence_number) {
                continue;
            }
            match (self.deliver, record.aggregate.take()) {
                (Deliver::UserRecords, _) => out.push(record),
                (Deliver::KinesisRecords, Some(aggregate))
                    if record.sub_sequence_number == Some(0) =>
                {
                    self.rebuilt = Some(record.sequence_number.clone());
                    out.push(Record {
                        sub_sequence_number: None,
                        partition_key: aggregate.partition_key,
                        explicit_hash_key: aggregate.explicit_hash_key,
                        data: aggregate.data,
                        ..record
                    });
                }
                (Deliver::KinesisRecords, _) => {
                    return Err(SourceError::Request(RequestError {
                        field: "deliver".to_owned(),
                        message: format!(
                            "record {} is a user record of a KPL aggregate that the source doesn't keep whole (an archive written with ArchiveDeaggregate before it kept the Kinesis record), so it can't be delivered as the mapping would; accepted values: {}",
                            record.id(),
                            Deliver::ACCEPTED
                        ),
                    }));
                }
            }
        }
        Ok(out)
    }
}

impl Pages for KinesisRecords<'_> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Record>>, SourceError>> {
        Box::pin(async move {
            match self.pages.next_page().await? {
                Some(records) => self.whole(records).map(Some),
                None => Ok(None),
            }
        })
    }

    fn cursor(&self) -> Option<String> {
        self.pages.cursor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let text = include_str!("../../../events/kinesis-batch.json");
        crate::model::event::DeliveredEvent::from_slice(text.as_bytes())
            .unwrap()
            .records
    }

    #[test]
    fn corrupt_aggregates_are_kept_whole() {
        let mut records = sample();
        let total = records.len();
        assert_eq!(
            deaggregate_all(&records).len(),
            total - 1 + 3,
            "the sample aggregate holds three"
        );
        // Flip a byte inside the aggregate's protobuf: its MD5 no longer matches.
        records.iter_mut().find(|r| r.is_aggregated()).unwrap().data[10] ^= 1;
        assert_eq!(
            deaggregate_all(&records),
            records,
            "nothing split, nothing dropped"
        );
    }
}

#[cfg(test)]
mod whole_tests {
    use std::collections::{BTreeSet, VecDeque};

    use super::*;
    use crate::model::event::{EventSource, kinesis_event};

    struct Fixed(VecDeque<Vec<Record>>);

    impl Pages for Fixed {
        fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Record>>, SourceError>> {
            Box::pin(async move { Ok(self.0.pop_front()) })
        }
    }

    fn sample() -> Vec<Record> {
        let text = include_str!("../../../events/kinesis-batch.json");
        crate::model::event::DeliveredEvent::from_slice(text.as_bytes())
            .unwrap()
            .records
    }

    async fn read(pages: Vec<Vec<Record>>, deliver: Deliver) -> Result<Vec<Record>, SourceError> {
        let mut whole = KinesisRecords::new(Box::new(Fixed(pages.into())), deliver);
        let mut out = Vec::new();
        while let Some(page) = whole.next_page().await? {
            out.extend(page);
        }
        Ok(out)
    }

    /// Issue 12 point 1: the mapping hands a function the Kinesis record,
    /// aggregate bytes and all, under its own partition key. An archive of
    /// user records gives it back byte for byte, once, even when its user
    /// records are split over two pages (objects).
    #[tokio::test]
    async fn an_archived_aggregate_is_delivered_whole_once() {
        let records = sample();
        assert!(records.iter().any(Record::is_aggregated));
        let users = deaggregate_all(&records);
        let firsts: Vec<&Record> = users.iter().filter(|r| r.aggregate.is_some()).collect();
        assert_eq!(firsts.len(), 1, "one line keeps the aggregate");
        assert_eq!(firsts[0].sub_sequence_number, Some(0));
        // Its line round-trips the Kinesis record.
        let mut line = Vec::new();
        firsts[0].write_line(&mut line);
        assert_eq!(&Record::from_line(&line).unwrap(), firsts[0]);

        let at = users
            .iter()
            .position(|r| r.sub_sequence_number == Some(1))
            .unwrap();
        let pages = vec![users[..at].to_vec(), users[at..].to_vec()];
        assert_eq!(read(pages, Deliver::KinesisRecords).await.unwrap(), records);
        // Kept whole (no ArchiveDeaggregate), nothing to rebuild.
        assert_eq!(
            read(vec![records.clone()], Deliver::KinesisRecords)
                .await
                .unwrap(),
            records
        );
    }

    /// User records the source can't rebuild: without the opt-in the step
    /// fails naming `deliver`; with it each is its own event record and no
    /// two share an eventID.
    #[tokio::test]
    async fn user_records_need_the_opt_in_and_get_their_own_event_ids() {
        let mut users = deaggregate_all(&sample());
        for user in &mut users {
            user.aggregate = None;
        }
        let err = read(vec![users.clone()], Deliver::KinesisRecords)
            .await
            .unwrap_err();
        let SourceError::Request(error) = err else {
            panic!("{err:?}")
        };
        assert_eq!(error.field, "deliver");
        assert!(error.message.contains("USER_RECORDS"), "{}", error.message);

        let delivered = read(vec![users.clone()], Deliver::UserRecords)
            .await
            .unwrap();
        assert_eq!(delivered, users);
        let source = EventSource::new("arn:aws:kinesis:us-east-1:1:stream/s", "").unwrap();
        let event = kinesis_event(&delivered, &source);
        let ids: BTreeSet<String> = event
            .records
            .iter()
            .map(|r| r.event_id.clone().unwrap())
            .collect();
        assert_eq!(ids.len(), delivered.len(), "{ids:?}");
        assert!(ids.iter().any(|id| id.ends_with(":2")), "{ids:?}");
    }
}
