//! The DynamoDB archive as a source: its items read back as records, a page
//! at a time (bounded memory whatever the table's size).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::model::dynamodb_item::{LATEST_SORT_KEY, hash_key, position_range};
use crate::model::record::{ArrivalTime, EncryptionType, Record};
use crate::model::seqno::{MAX_DIGITS, Position, SequenceNumber, SequenceNumberError};
use crate::request::RequestError;
use crate::sources::{
    BoxFuture, Lineage, Pages, RecordSource, ShardGroups, SourceError, SourceStream, one_group,
};
use crate::store::ObjectReader;

/// Reads an item written by the archive's writer
/// ([`crate::sinks::dynamodb::item`]) back as a record. `data` is empty when
/// the payload lives in S3 (see the returned key).
pub fn record_from_item(
    item: &HashMap<String, AttributeValue>,
) -> Result<(Record, Option<String>), ItemError> {
    let text = |name: &'static str| match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        _ => Err(ItemError::Missing { attribute: name }),
    };
    let number = |name: &'static str| match item.get(name) {
        Some(AttributeValue::N(n)) => Ok(Some(n.clone())),
        None => Ok(None),
        _ => Err(ItemError::Missing { attribute: name }),
    };
    let sequence_number =
        SequenceNumber::parse(&text("sequenceNumber")?).map_err(ItemError::SequenceNumber)?;
    let sub_sequence_number = number("subSequenceNumber")?
        .map(|n| n.parse::<u64>())
        .transpose()
        .map_err(ItemError::SubSequenceNumber)?;
    let arrival = number("approximateArrivalTimestamp")?.ok_or(ItemError::Missing {
        attribute: "approximateArrivalTimestamp",
    })?;
    let approximate_arrival_timestamp = arrival
        .parse::<f64>()
        .ok()
        .and_then(ArrivalTime::from_epoch_seconds)
        .ok_or_else(|| ItemError::ArrivalTime {
            value: arrival.clone(),
        })?;
    let (data, overflow) = match (item.get("data"), item.get("dataS3Key")) {
        (Some(AttributeValue::B(b)), _) => (b.as_ref().to_vec(), None),
        (_, Some(AttributeValue::S(key))) => (Vec::new(), Some(key.clone())),
        _ => return Err(ItemError::Missing { attribute: "data" }),
    };
    Ok((
        Record {
            stream: text("stream")?,
            shard_id: text("shardId")?,
            sequence_number,
            sub_sequence_number,
            partition_key: text("partitionKey")?,
            explicit_hash_key: text("explicitHashKey").ok(),
            encryption_type: text("encryptionType")
                .ok()
                .filter(|t| t == "KMS")
                .map(|_| EncryptionType::Kms),
            approximate_arrival_timestamp,
            data,
            aggregate: None,
        },
        overflow,
    ))
}

/// Where a paged read resumes (DynamoDB's `LastEvaluatedKey`).
pub type PageKey = HashMap<String, AttributeValue>;

/// One page of archive items read back.
#[derive(Debug, Default)]
pub struct Page {
    /// Records in key order; the data of an overflowed record is empty and
    /// its S3 key is given beside it.
    pub records: Vec<(Record, Option<String>)>,
    /// `Some` when there is more to read.
    pub next: Option<PageKey>,
}

/// Reading the DynamoDB archive back, a page at a time (bounded memory
/// whatever the table's size).
#[derive(Debug, Clone)]
pub struct DynamoReader {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// A read of the archive table that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading DynamoDB table {table} failed")]
    Request {
        table: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("DynamoDB table {table}")]
    Item {
        table: String,
        #[source]
        source: ItemError,
    },
}

impl DynamoReader {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn request_error<E>(&self, error: aws_sdk_dynamodb::error::SdkError<E>) -> ReadError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        ReadError::Request {
            table: self.table.clone(),
            source: Box::new(error),
        }
    }

    fn page(
        &self,
        items: &[HashMap<String, AttributeValue>],
        next: Option<&PageKey>,
    ) -> Result<Page, ReadError> {
        Ok(Page {
            records: self.records(items)?,
            next: next.cloned(),
        })
    }

    fn records(
        &self,
        items: &[HashMap<String, AttributeValue>],
    ) -> Result<Vec<(Record, Option<String>)>, ReadError> {
        items
            .iter()
            .map(|item| {
                record_from_item(item).map_err(|source| ReadError::Item {
                    table: self.table.clone(),
                    source,
                })
            })
            .collect()
    }

    /// The query of `ALL` items of one partition key with sequence numbers
    /// in `from..=to` (either bound optional), in sequence order.
    fn key_range(
        &self,
        stream: &str,
        partition_key: &str,
        from: Option<&SequenceNumber>,
        to: Option<&SequenceNumber>,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        let zero = SequenceNumber::parse("0").expect("0 is a sequence number");
        let max =
            SequenceNumber::parse(&"9".repeat(MAX_DIGITS)).expect("129 nines is a sequence number");
        let (low, high) = position_range(from.unwrap_or(&zero), to.unwrap_or(&max));
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":pk", AttributeValue::S(hash_key(stream, partition_key)))
            .expression_attribute_values(":low", AttributeValue::S(low))
            .expression_attribute_values(":high", AttributeValue::S(high))
    }

    /// `ALL` items of one partition key, in sequence order, with sequence
    /// numbers in `from..=to` (either bound optional).
    pub async fn query(
        &self,
        stream: &str,
        partition_key: &str,
        from: Option<&SequenceNumber>,
        to: Option<&SequenceNumber>,
        limit: i32,
        start: Option<PageKey>,
    ) -> Result<Page, ReadError> {
        let output = self
            .key_range(stream, partition_key, from, to)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        self.page(output.items(), output.last_evaluated_key())
    }

    /// The shards that hold `ALL` items of one partition key with sequence
    /// numbers in `from..=to`: a query of the keys and `shardId` only, so a
    /// plan doesn't read every record's data to learn them.
    pub async fn shards_of(
        &self,
        stream: &str,
        partition_key: &str,
        from: Option<&SequenceNumber>,
        to: Option<&SequenceNumber>,
    ) -> Result<std::collections::BTreeSet<String>, ReadError> {
        let mut shards = std::collections::BTreeSet::new();
        let mut items = self
            .key_range(stream, partition_key, from, to)
            .projection_expression("shardId")
            .into_paginator()
            .items()
            .send();
        while let Some(item) = items.next().await {
            let item = item.map_err(|e| self.request_error(e))?;
            if let Some(AttributeValue::S(shard)) = item.get("shardId") {
                shards.insert(shard.clone());
            }
        }
        Ok(shards)
    }

    /// The `LATEST` item of one partition key.
    pub async fn latest(
        &self,
        stream: &str,
        partition_key: &str,
    ) -> Result<Option<(Record, Option<String>)>, ReadError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(hash_key(stream, partition_key)))
            .key("sk", AttributeValue::S(LATEST_SORT_KEY.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        match output.item() {
            Some(item) => Ok(self.records(std::slice::from_ref(item))?.pop()),
            None => Ok(None),
        }
    }

    /// Items of a stream that arrived in `from..to`, in table order (a
    /// scan: use it when the partition key is unknown). `latest` chooses the
    /// `LATEST` items instead of the `ALL` ones.
    pub async fn scan(
        &self,
        stream: &str,
        from: ArrivalTime,
        to: ArrivalTime,
        latest: bool,
        limit: i32,
        start: Option<PageKey>,
    ) -> Result<Page, ReadError> {
        let seconds = |t: ArrivalTime| serde_json::to_string(&t).expect("an f64 always serialises");
        let sk_test = if latest {
            "sk = :latest"
        } else {
            "sk <> :latest"
        };
        let output = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression(format!(
                "#stream = :stream AND {sk_test} AND approximateArrivalTimestamp >= :from AND approximateArrivalTimestamp < :to"
            ))
            .expression_attribute_names("#stream", "stream")
            .expression_attribute_values(":stream", AttributeValue::S(stream.to_owned()))
            .expression_attribute_values(":latest", AttributeValue::S(LATEST_SORT_KEY.to_owned()))
            .expression_attribute_values(":from", AttributeValue::N(seconds(from)))
            .expression_attribute_values(":to", AttributeValue::N(seconds(to)))
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        self.page(output.items(), output.last_evaluated_key())
    }
}

/// An archive item that isn't one this engine wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("archive item has no {attribute} attribute of the expected type")]
    Missing { attribute: &'static str },
    #[error("archive item attribute sequenceNumber is invalid")]
    SequenceNumber(#[source] SequenceNumberError),
    #[error("archive item attribute subSequenceNumber is invalid")]
    SubSequenceNumber(#[source] std::num::ParseIntError),
    #[error("archive item attribute approximateArrivalTimestamp is invalid: {value:?}")]
    ArrivalTime { value: String },
}

/// Records per page of a DynamoDB source.
const PAGE: i32 = 1000;

/// The DynamoDB archive's records (`ALL` items) of one partition key, with
/// sequence numbers in `from..=to`.
#[derive(Debug)]
pub struct DynamoSource<S> {
    pub reader: DynamoReader,
    pub stream: String,
    pub partition_key: String,
    pub from: Option<SequenceNumber>,
    pub to: Option<SequenceNumber>,
    /// The archive bucket, where records too large for an item keep their
    /// data.
    pub overflow: Option<S>,
}

impl<S: ObjectReader> RecordSource for DynamoSource<S> {
    fn stream(&self) -> SourceStream {
        SourceStream::Name(self.stream.clone())
    }

    fn shards(&self) -> BoxFuture<'_, Result<Vec<Vec<String>>, SourceError>> {
        Box::pin(async move {
            let shards = self
                .reader
                .shards_of(
                    &self.stream,
                    &self.partition_key,
                    self.from.as_ref(),
                    self.to.as_ref(),
                )
                .await?;
            Ok(one_group(shards.into_iter().collect()))
        })
    }

    /// One group, and it is the real lineage: a partition key hashes into
    /// one shard at a time, so the shards holding one key's records are one
    /// chain of parents and children (shard-id order is parents first) and
    /// have nothing to run beside each other.
    fn plan_shards(&self) -> BoxFuture<'_, Result<ShardGroups, SourceError>> {
        Box::pin(async move {
            Ok(ShardGroups {
                groups: self.shards().await?,
                lineage: Some(Lineage::OneGroup),
            })
        })
    }

    fn pages<'a>(
        &'a self,
        shard_id: &'a str,
        after: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<Box<dyn Pages + 'a>, SourceError>> {
        // From the last settled record (the reader skips it and everything
        // before it).
        let from = after
            .map(|p| p.sequence_number.clone())
            .or_else(|| self.from.clone());
        let pages: Box<dyn Pages + 'a> = Box::new(ItemPages {
            source: self,
            shard_id,
            from,
            start: None,
            done: false,
        });
        Box::pin(async move { Ok(pages) })
    }
}

/// A partition key's items of one shard, a query page at a time.
struct ItemPages<'a, S> {
    source: &'a DynamoSource<S>,
    shard_id: &'a str,
    from: Option<SequenceNumber>,
    start: Option<PageKey>,
    done: bool,
}

impl<S: ObjectReader> Pages for ItemPages<'_, S> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Record>>, SourceError>> {
        Box::pin(async move {
            if self.done {
                return Ok(None);
            }
            let source = self.source;
            let page = source
                .reader
                .query(
                    &source.stream,
                    &source.partition_key,
                    self.from.as_ref(),
                    source.to.as_ref(),
                    PAGE,
                    self.start.take(),
                )
                .await?;
            let mut records = Vec::new();
            for (mut record, data_key) in page.records {
                if record.shard_id != self.shard_id {
                    continue;
                }
                if let Some(key) = data_key {
                    let Some(store) = &source.overflow else {
                        return Err(SourceError::Request(RequestError {
                            field: "source.overflowBucket".to_owned(),
                            message: format!(
                                "is missing; record {} keeps its data in S3 ({key}): name the archive bucket",
                                record.sequence_number
                            ),
                        }));
                    };
                    record.data = store.get(&key).await?;
                }
                records.push(record);
            }
            self.start = page.next;
            self.done = self.start.is_none();
            Ok(Some(records))
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;
    use crate::sinks::dynamodb::tests::{record, seq};
    use crate::sinks::dynamodb::{ArchiveMode, item};

    #[tokio::test]
    async fn query_pages_through_a_numeric_sequence_range() {
        let stored: Vec<Record> = (0..5)
            .map(|i| record("k", &format!("{}", 10 + i), None, vec![i as u8]))
            .collect();
        let items: Vec<_> = stored
            .iter()
            .map(|r| item(r, ArchiveMode::All, 0, None, Ok(&r.data)))
            .collect();
        let (first, second) = (items[..3].to_vec(), items[3..].to_vec());
        let from = seq(&"9".repeat(2));
        let to = seq("1000");
        let (low, high) = position_range(&from, &to);
        let rule = mock!(aws_sdk_dynamodb::Client::query)
            .match_requests(move |q| {
                q.key_condition_expression() == Some("pk = :pk AND sk BETWEEN :low AND :high")
                    && q.expression_attribute_values().unwrap()[":pk"]
                        == AttributeValue::S("orders#k".into())
                    && q.expression_attribute_values().unwrap()[":low"]
                        == AttributeValue::S(low.clone())
                    && q.expression_attribute_values().unwrap()[":high"]
                        == AttributeValue::S(high.clone())
            })
            .sequence()
            .output(move || {
                aws_sdk_dynamodb::operation::query::QueryOutput::builder()
                    .set_items(Some(first.clone()))
                    .last_evaluated_key("pk", AttributeValue::S("orders#k".into()))
                    .build()
            })
            .output(move || {
                aws_sdk_dynamodb::operation::query::QueryOutput::builder()
                    .set_items(Some(second.clone()))
                    .build()
            })
            .build();
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
        let reader = DynamoReader::new(client, "archive");
        let mut read = Vec::new();
        let mut start = None;
        loop {
            let page = reader
                .query("orders", "k", Some(&from), Some(&to), 3, start)
                .await
                .unwrap();
            read.extend(page.records.into_iter().map(|(r, overflow)| {
                assert!(overflow.is_none());
                r
            }));
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        assert_eq!(read, stored);
        assert_eq!(rule.num_calls(), 2);
    }

    #[tokio::test]
    async fn a_foreign_item_is_an_error_naming_the_attribute() {
        let rule = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
            aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder()
                .item("pk", AttributeValue::S("orders#k".into()))
                .item("sk", AttributeValue::S(LATEST_SORT_KEY.into()))
                .build()
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
        let err = DynamoReader::new(client, "archive")
            .latest("orders", "k")
            .await
            .unwrap_err();
        assert_eq!(
            crate::model::record::tests::chain(&err),
            "DynamoDB table archive: archive item has no sequenceNumber attribute of the expected type"
        );
    }
}
