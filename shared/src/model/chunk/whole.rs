//! Compressing a chunk whose lines are all in memory, in one call.
//!
//! The archiver holds each object's record lines anyway (at most
//! `DEFAULT_MAX_OBJECT_BYTES` of them, one invocation's batch): compressed
//! in one call, zstd works on one contiguous input, without the streaming
//! encoder's copy of every line into its window and its match search across
//! the window's wrap, and gzip takes the input in one piece rather than one
//! call per line. The result reads as any chunk does ([`super::ChunkReader`]).

use std::io::Write;

use flate2::Compression as GzLevel;
use flate2::write::GzEncoder;

use super::{ChunkError, ChunkSummary, Compression};
use crate::model::record::{Record, RecordData};

/// Encodes records into one in-memory chunk, as [`super::encode`] does at
/// `level`, with the lines written straight into one buffer and compressed
/// at the end. `capacity`: the lines' expected size.
pub fn encode_whole<D: RecordData>(
    object: &str,
    records: &[Record<D>],
    compression: Compression,
    level: Option<u32>,
    capacity: usize,
) -> Result<(Vec<u8>, ChunkSummary), ChunkError> {
    let mut lines = Vec::with_capacity(capacity);
    let mut summary = ChunkSummary::default();
    for record in records {
        let start = lines.len();
        record.write_line(&mut lines);
        summary.add_line(record.approximate_arrival_timestamp, lines.len() - start);
    }
    // The ids of the ends only: not two copies per record.
    summary.first = records.first().map(Record::id);
    summary.last = records.last().map(Record::id);
    Ok((compress(object, lines, compression, level)?, summary))
}

/// `lines` compressed as one chunk at `level` (as [`super::ChunkWriter::with_level`]
/// takes it); `object` names it in errors.
pub fn compress(
    object: &str,
    lines: Vec<u8>,
    compression: Compression,
    level: Option<u32>,
) -> Result<Vec<u8>, ChunkError> {
    let level = level.map(|l| l.clamp(*compression.levels().start(), *compression.levels().end()));
    let written = match compression {
        Compression::None => return Ok(lines),
        Compression::Gzip => {
            // Gzip's output is rarely under a third of JSON Lines of base64.
            let mut encoder = GzEncoder::new(
                Vec::with_capacity(lines.len() / 2),
                level.map_or(GzLevel::default(), GzLevel::new),
            );
            encoder.write_all(&lines).and_then(|()| encoder.finish())
        }
        Compression::Zstd => zstd::bulk::Compressor::new(level.map_or(3, |l| l as i32))
            .and_then(|mut compressor| compressor.compress(&lines)),
    };
    written.map_err(|source| ChunkError::Write {
        object: object.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chunk::{decode, encode};
    use crate::model::record::tests::record;

    /// A whole chunk reads back as the streamed one does, with the same
    /// summary, at every compression and at the levels' ends.
    #[test]
    fn whole_chunks_read_as_streamed_ones() {
        let records: Vec<Record> = (0..700)
            .map(|i| Record {
                data: (0..i % 311).map(|b| (b * 13 + i) as u8).collect(),
                ..record(0, i)
            })
            .collect();
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let (_, streamed) = encode("chunk", &records, compression).unwrap();
            let levels = compression.levels();
            for level in [None, Some(*levels.start()), Some(*levels.end())] {
                let (bytes, summary) =
                    encode_whole("chunk", &records, compression, level, 0).unwrap();
                assert_eq!(summary, streamed, "{compression} {level:?}");
                assert_eq!(decode("chunk", &bytes).unwrap(), records);
            }
        }
    }
}
