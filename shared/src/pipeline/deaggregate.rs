//! KPL aggregates split into their user records on the way to a sink that
//! keys or stores user records.

use tracing::warn;

use crate::model::record::Record;

/// User records for keys and lines; a corrupt aggregate is kept whole
/// rather than dropped: the archive never loses what the stream held.
pub fn deaggregate_all(records: &[Record]) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        match record.clone().deaggregate() {
            Ok(users) => out.extend(users),
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
