//! The archiver's records hold their data as the base64 their event
//! delivered: the objects it writes must be, byte for byte, those it writes
//! from records holding the bytes (the way it archived before).

use std::collections::BTreeMap;

use super::*;
use crate::model::archive::tests::{BEFORE_HOUR, record};
use crate::model::chunk::{self, Compression};
use crate::model::event::{DeliveredEvent, kinesis_event, payload, tests::source};
use crate::model::record::Base64;
use crate::sinks::s3_archive::default_level;
use crate::store::MemoryStore;

/// Every object written for `payload`, by key.
async fn objects<D: RecordData>(
    payload: &[u8],
    layout: &ArchiveLayout,
    deaggregate: bool,
) -> BTreeMap<String, Vec<u8>> {
    let event: DeliveredEvent<D> = serde_json::from_slice(payload).unwrap();
    let archiver = Archiver::new(
        MemoryStore::default(),
        layout.clone(),
        deaggregate,
        None,
        StreamSettings {
            modes: vec![ArchiveMode::All],
            ttl: None,
        },
        None::<KinesisTags>,
        None::<KinesisLineage>,
    );
    let archived = archiver
        .archive(&event.stream_arn.unwrap(), event.records, 0)
        .await;
    assert!(archived.response.batch_item_failures.is_empty());
    archiver
        .s3
        .objects()
        .into_iter()
        .map(|(key, object)| (key, object.body))
        .collect()
}

#[tokio::test]
async fn objects_from_the_delivered_text_are_those_from_the_bytes() {
    // The sample holds a KPL aggregate; the other batch spans an hour, has
    // data of every length modulo 3 (every padding) and a key to escape.
    let sample = include_bytes!("../../../../events/kinesis-batch.json").to_vec();
    let records: Vec<Record> = (0..300)
        .map(|i| Record {
            partition_key: format!("key \"{}\"", i % 7),
            data: (0..i % 97).map(|b| (b * 7 + i) as u8).collect(),
            ..record(0, i as u32, BEFORE_HOUR + i as i64 * 10)
        })
        .collect();
    let generated = payload(&kinesis_event(&records, &source()));
    for payload in [sample, generated] {
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            for deaggregate in [false, true] {
                let layout = ArchiveLayout {
                    compression,
                    compression_level: default_level(compression),
                    ..ArchiveLayout::default()
                };
                let from_bytes = objects::<Vec<u8>>(&payload, &layout, deaggregate).await;
                let from_text = objects::<Base64>(&payload, &layout, deaggregate).await;
                assert!(!from_bytes.is_empty());
                assert_eq!(
                    from_text, from_bytes,
                    "{compression}, deaggregate {deaggregate}"
                );
                if compression != Compression::None {
                    continue;
                }
                // And the lines are the bytes serde writes for each record.
                for (key, body) in &from_text {
                    let mut lines = Vec::new();
                    for record in chunk::decode(key, body).unwrap() {
                        serde_json::to_writer(&mut lines, &record).unwrap();
                        lines.push(b'\n');
                    }
                    assert_eq!(&lines, body);
                }
            }
        }
    }
}
