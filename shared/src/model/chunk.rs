//! Streaming writer and reader of record-line chunks.
//!
//! A chunk is a compressed JSON Lines object (gzip by default, since Athena
//! and every tool reads it; zstd as an option; uncompressed for hand-made
//! local files), one [`Record`] per line. Both directions stream: the writer
//! encodes one line at a time into the compressor, the reader decodes one
//! line at a time, so a chunk's records are never all in memory, let alone
//! twice. A corrupt or truncated chunk is an error naming the object and the
//! line where reading stopped, never a silently shorter list of records.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::str::FromStr;

use flate2::Compression as GzLevel;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::model::record::{ArrivalTime, Record, RecordData};
use crate::model::seqno::UserRecordId;

mod whole;

pub use whole::{compress, encode_whole};

/// A line longer than this can't be a record line: Kinesis records carry at
/// most 1 MiB of data (about 1.4 MB as base64) plus small metadata. The bound
/// keeps a corrupt chunk from making the reader buffer without limit.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a chunk is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    /// Plain JSON Lines, for local files people write or read by hand.
    None,
}

impl Compression {
    pub const ACCEPTED: &'static str = "gzip, zstd, none";

    /// The file name ending of a chunk, `.` excluded.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Gzip => "jsonl.gz",
            Self::Zstd => "jsonl.zst",
            Self::None => "jsonl",
        }
    }

    /// The S3 `Content-Encoding` of a chunk object, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Self::Gzip => Some("gzip"),
            Self::Zstd => Some("zstd"),
            Self::None => None,
        }
    }

    /// The levels a writer takes: gzip's 1 (fastest) to 9 (smallest);
    /// zstd's 1 to 19 (20 to 22 need far more memory than a function
    /// should spend on one object). Plain has none; 0 stands for it.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Self::Gzip => 1..=9,
            Self::Zstd => 1..=19,
            Self::None => 0..=0,
        }
    }

    /// The S3 `Content-Type` of every chunk object.
    pub fn content_type(self) -> &'static str {
        "application/x-ndjson"
    }

    /// Recognises a chunk by its first bytes; anything that is neither gzip
    /// nor zstd is taken for plain JSON Lines and validated line by line.
    fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&GZIP_MAGIC) {
            Self::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::None => "none",
        })
    }
}

/// An unknown compression name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown compression {value:?}; accepted values: {}",
    Compression::ACCEPTED
)]
pub struct UnknownCompression {
    pub value: String,
}

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "gzip" | "gz" => Ok(Self::Gzip),
            "zstd" | "zst" => Ok(Self::Zstd),
            "none" | "plain" => Ok(Self::None),
            _ => Err(UnknownCompression {
                value: s.to_owned(),
            }),
        }
    }
}

/// Why a chunk could not be written or read. Every variant names the object
/// (S3 key or file path) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("{object}: line {line} is not a record line")]
    Line {
        object: String,
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("{object}: line {line} is longer than {MAX_LINE_BYTES} bytes; the chunk is corrupt")]
    LineTooLong { object: String, line: u64 },
    #[error("{object}: corrupt or truncated {compression} data after line {line}")]
    Corrupt {
        object: String,
        compression: Compression,
        /// Lines read successfully before the failure.
        line: u64,
        #[source]
        source: io::Error,
    },
    #[error("{object}: writing the chunk failed")]
    Write {
        object: String,
        #[source]
        source: io::Error,
    },
}

/// What a finished chunk holds: enough to name its object and fill a
/// manifest without reading it again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkSummary {
    pub records: u64,
    /// Bytes of record lines before compression.
    pub uncompressed_bytes: u64,
    pub first: Option<UserRecordId>,
    pub last: Option<UserRecordId>,
    pub first_arrival: Option<ArrivalTime>,
    pub last_arrival: Option<ArrivalTime>,
}

impl ChunkSummary {
    fn add<D>(&mut self, record: &Record<D>, line_bytes: usize) {
        let id = record.id();
        if self.first.is_none() {
            self.first = Some(id.clone());
        }
        self.last = Some(id);
        self.add_line(record.approximate_arrival_timestamp, line_bytes);
    }

    /// [`Self::add`] but for the ids, which a writer that has all the
    /// records sets once, from the first and the last.
    fn add_line(&mut self, at: ArrivalTime, line_bytes: usize) {
        self.first_arrival = Some(self.first_arrival.map_or(at, |t| t.min(at)));
        self.last_arrival = Some(self.last_arrival.map_or(at, |t| t.max(at)));
        self.records += 1;
        self.uncompressed_bytes += line_bytes as u64;
    }
}

enum Encoder<W: Write> {
    Gzip(GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Plain(W),
}

/// Writes records as one chunk into `W` (a `Vec<u8>` for an S3 upload, a
/// file for the CLI).
pub struct ChunkWriter<W: Write> {
    object: String,
    encoder: Encoder<W>,
    line: Vec<u8>,
    summary: ChunkSummary,
}

impl<W: Write> ChunkWriter<W> {
    /// `object` names the chunk in errors.
    pub fn new(
        object: impl Into<String>,
        sink: W,
        compression: Compression,
    ) -> Result<Self, ChunkError> {
        Self::with_level(object, sink, compression, None)
    }

    /// As [`Self::new`], at a compression level within
    /// [`Compression::levels`] (`None`: the compressor's default, gzip 6 and
    /// zstd 3; ignored for `None` compression).
    pub fn with_level(
        object: impl Into<String>,
        sink: W,
        compression: Compression,
        level: Option<u32>,
    ) -> Result<Self, ChunkError> {
        let object = object.into();
        let level =
            level.map(|l| l.clamp(*compression.levels().start(), *compression.levels().end()));
        let encoder = match compression {
            Compression::Gzip => Encoder::Gzip(GzEncoder::new(
                sink,
                level.map_or(GzLevel::default(), GzLevel::new),
            )),
            // Level 3 is zstd's own default: most of the ratio at a fraction
            // of the CPU, which matters inside a Lambda step's time budget.
            Compression::Zstd => Encoder::Zstd(
                zstd::stream::write::Encoder::new(sink, level.map_or(3, |l| l as i32)).map_err(
                    |source| ChunkError::Write {
                        object: object.clone(),
                        source,
                    },
                )?,
            ),
            Compression::None => Encoder::Plain(sink),
        };
        Ok(Self {
            object,
            encoder,
            line: Vec::with_capacity(4096),
            summary: ChunkSummary::default(),
        })
    }

    /// Appends one record.
    pub fn write<D: RecordData>(&mut self, record: &Record<D>) -> Result<(), ChunkError> {
        self.line.clear();
        record.write_line(&mut self.line);
        let result = match &mut self.encoder {
            Encoder::Gzip(e) => e.write_all(&self.line),
            Encoder::Zstd(e) => e.write_all(&self.line),
            Encoder::Plain(w) => w.write_all(&self.line),
        };
        result.map_err(|source| ChunkError::Write {
            object: self.object.clone(),
            source,
        })?;
        self.summary.add(record, self.line.len());
        Ok(())
    }

    /// What has been written so far.
    pub fn summary(&self) -> &ChunkSummary {
        &self.summary
    }

    /// Finishes the compressed stream and gives back the sink.
    pub fn finish(self) -> Result<(W, ChunkSummary), ChunkError> {
        let object = self.object;
        let sink = match self.encoder {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Plain(mut w) => w.flush().map(|()| w),
        }
        .map_err(|source| ChunkError::Write { object, source })?;
        Ok((sink, self.summary))
    }
}

/// Encodes records into one in-memory chunk.
pub fn encode<'a>(
    object: &str,
    records: impl IntoIterator<Item = &'a Record>,
    compression: Compression,
) -> Result<(Vec<u8>, ChunkSummary), ChunkError> {
    let mut writer = ChunkWriter::new(object, Vec::new(), compression)?;
    for record in records {
        writer.write(record)?;
    }
    writer.finish()
}

/// Reads the records of one chunk, in order, one line at a time.
pub struct ChunkReader<'r> {
    object: String,
    compression: Compression,
    lines: Box<dyn BufRead + Send + 'r>,
    line: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<'r> ChunkReader<'r> {
    /// Opens a chunk, recognising gzip, zstd or plain JSON Lines by its
    /// first bytes (the object's name may lie; its bytes don't).
    pub fn new(
        object: impl Into<String>,
        source: impl Read + Send + 'r,
    ) -> Result<Self, ChunkError> {
        let object = object.into();
        let mut raw = BufReader::with_capacity(64 * 1024, source);
        let head = raw.fill_buf().map_err(|source| ChunkError::Corrupt {
            object: object.clone(),
            compression: Compression::None,
            line: 0,
            source,
        })?;
        let compression = Compression::sniff(head);
        let lines: Box<dyn BufRead + Send + 'r> = match compression {
            // Multi-member, as gzip(1) and Athena read concatenated members.
            Compression::Gzip => Box::new(BufReader::with_capacity(
                64 * 1024,
                MultiGzDecoder::new(raw),
            )),
            Compression::Zstd => Box::new(BufReader::with_capacity(
                64 * 1024,
                zstd::stream::read::Decoder::with_buffer(raw).map_err(|source| {
                    ChunkError::Corrupt {
                        object: object.clone(),
                        compression,
                        line: 0,
                        source,
                    }
                })?,
            )),
            Compression::None => Box::new(raw),
        };
        Ok(Self {
            object,
            compression,
            lines,
            line: 0,
            buf: Vec::with_capacity(4096),
            done: false,
        })
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Lines read so far.
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    fn next_record(&mut self) -> Result<Option<Record>, ChunkError> {
        loop {
            self.buf.clear();
            let limit = MAX_LINE_BYTES as u64 + 1;
            let read = (&mut self.lines)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| ChunkError::Corrupt {
                    object: self.object.clone(),
                    compression: self.compression,
                    line: self.line,
                    source,
                })?;
            if read == 0 {
                return Ok(None);
            }
            self.line += 1;
            if self.buf.last() != Some(&b'\n') && read as u64 == limit {
                return Err(ChunkError::LineTooLong {
                    object: self.object.clone(),
                    line: self.line,
                });
            }
            let text = trim_line_end(&self.buf);
            if text.iter().all(u8::is_ascii_whitespace) {
                // Tolerate blank lines (a trailing newline in a hand-made file).
                continue;
            }
            return Record::from_line(text)
                .map(Some)
                .map_err(|source| ChunkError::Line {
                    object: self.object.clone(),
                    line: self.line,
                    source,
                });
        }
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Iterator for ChunkReader<'_> {
    type Item = Result<Record, ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_record().transpose();
        if !matches!(item, Some(Ok(_))) {
            // After an error the position in the stream is unknown: stop
            // rather than report records past a gap.
            self.done = true;
        }
        item
    }
}

/// Decodes a whole in-memory chunk.
pub fn decode(object: &str, bytes: &[u8]) -> Result<Vec<Record>, ChunkError> {
    ChunkReader::new(object, bytes)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::tests::{arb_record, record};
    use proptest::prelude::*;

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                partition_key: format!("key-{}", i % 7),
                data: (0..(i % 300)).map(|b| (b * 31 + i) as u8).collect(),
                ..record(0, i)
            })
            .collect()
    }

    const ALL: [Compression; 3] = [Compression::Gzip, Compression::Zstd, Compression::None];

    #[test]
    fn round_trip_every_compression_with_summary() {
        let input = records(500);
        for compression in ALL {
            let (bytes, summary) = encode("chunk", &input, compression).unwrap();
            assert_eq!(
                ChunkReader::new("chunk", bytes.as_slice())
                    .unwrap()
                    .compression(),
                compression
            );
            assert_eq!(decode("chunk", &bytes).unwrap(), input, "{compression}");
            assert_eq!(summary.records, 500);
            assert_eq!(summary.first, Some(input[0].id()));
            assert_eq!(summary.last, Some(input[499].id()));
            assert_eq!(
                summary.first_arrival,
                Some(input[0].approximate_arrival_timestamp)
            );
            assert_eq!(
                summary.last_arrival,
                Some(input[499].approximate_arrival_timestamp)
            );
        }
    }

    #[test]
    fn empty_chunk_is_valid_and_empty() {
        for compression in ALL {
            let (bytes, summary) = encode("empty", [], compression).unwrap();
            assert_eq!(summary.records, 0);
            assert!(decode("empty", &bytes).unwrap().is_empty());
        }
    }

    #[test]
    fn truncated_chunks_are_errors_naming_object_and_line() {
        let input = records(2000);
        for compression in [Compression::Gzip, Compression::Zstd] {
            let (bytes, _) = encode("s3://b/k.jsonl", &input, compression).unwrap();
            for cut in [bytes.len() - 1, bytes.len() - 9, bytes.len() / 2, 20] {
                let err = decode("s3://b/k.jsonl", &bytes[..cut]).unwrap_err();
                let message = err.to_string();
                assert!(
                    message.starts_with("s3://b/k.jsonl: "),
                    "{compression} cut {cut}: {message}"
                );
                assert!(
                    matches!(err, ChunkError::Corrupt { .. } | ChunkError::Line { .. }),
                    "{compression} cut {cut}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn corrupt_compressed_bytes_are_errors() {
        let input = records(300);
        for compression in [Compression::Gzip, Compression::Zstd] {
            let (bytes, _) = encode("obj", &input, compression).unwrap();
            for position in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 12] {
                let mut bad = bytes.clone();
                bad[position] ^= 0x55;
                let result = decode("obj", &bad);
                // A flipped bit either breaks the compressed stream (CRC,
                // checksum, bad block) or a line; it never yields records.
                assert!(
                    result.is_err(),
                    "{compression} flip at {position} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn bad_line_names_the_line_and_stops() {
        let mut bytes = Vec::new();
        records(3).iter().for_each(|r| r.write_line(&mut bytes));
        bytes.extend_from_slice(b"{\"stream\": 42}\n");
        records(2).iter().for_each(|r| r.write_line(&mut bytes));
        let mut reader = ChunkReader::new("local.jsonl", bytes.as_slice()).unwrap();
        assert_eq!(reader.by_ref().take(3).filter(Result::is_ok).count(), 3);
        let err = reader.next().unwrap().unwrap_err();
        assert!(matches!(err, ChunkError::Line { line: 4, .. }), "{err:?}");
        assert!(err.to_string().starts_with("local.jsonl: line 4 "), "{err}");
        assert!(reader.next().is_none(), "no record is read past a bad line");
    }

    #[test]
    fn overlong_line_is_rejected_without_buffering_it_all() {
        let bytes = vec![b'x'; MAX_LINE_BYTES + 10];
        let err = decode("big", &bytes).unwrap_err();
        assert!(
            matches!(err, ChunkError::LineTooLong { line: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn concatenated_gzip_members_read_as_one_chunk() {
        let input = records(10);
        let (mut a, _) = encode("a", &input[..4], Compression::Gzip).unwrap();
        let (b, _) = encode("b", &input[4..], Compression::Gzip).unwrap();
        a.extend_from_slice(&b);
        assert_eq!(decode("ab", &a).unwrap(), input);
    }

    #[test]
    fn compression_names() {
        assert_eq!("ZSTD".parse::<Compression>().unwrap(), Compression::Zstd);
        let err = "lz4".parse::<Compression>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown compression \"lz4\"; accepted values: gzip, zstd, none"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_records_round_trip_through_chunks(
            input in proptest::collection::vec(arb_record(), 0..40),
            zstd in any::<bool>(),
        ) {
            let compression = if zstd { Compression::Zstd } else { Compression::Gzip };
            let (bytes, summary) = encode("p", &input, compression).unwrap();
            prop_assert_eq!(summary.records as usize, input.len());
            prop_assert_eq!(decode("p", &bytes).unwrap(), input);
        }
    }
}
