//! The push side of reading a chunk: bytes go in as they arrive (an S3
//! body's pieces, a file's reads), records come out as whole lines are
//! decoded. Nothing here waits for input, so an async reader can feed it
//! from a network stream and stop feeding once it has a page of records:
//! what is held is the decompressor's window, the bytes of one feed slice
//! decoded, and at most one partial line.

use std::io::{self, Write};
use std::ops::Range;

use flate2::write::MultiGzDecoder;

use super::{ChunkError, Compression, MAX_LINE_BYTES, trim_line_end};
use crate::model::record::Record;

/// Compressed bytes handed to the decompressor at once. What one slice can
/// inflate to is this times the format's ratio, however large the piece the
/// caller holds (an S3 body's pieces run to hundreds of KiB).
pub const FEED_BYTES: usize = 16 * 1024;

/// Bytes that tell gzip from zstd from plain JSON Lines.
const HEAD_BYTES: usize = 4;

/// Decodes one chunk from its bytes, pushed in order.
pub struct ChunkDecoder {
    object: String,
    /// The first bytes, while they are too few to tell the compression.
    head: Vec<u8>,
    sink: Option<Sink>,
    compression: Compression,
    /// Lines handed out so far.
    line: u64,
    /// The decompressor's failure, reported after the lines decoded before
    /// it: those are whole lines of the object, the rest is unknown.
    failed: Option<io::Error>,
    finished: bool,
    done: bool,
}

enum Sink {
    // Multi-member, as gzip(1) and Athena read concatenated members. Boxed:
    // its state is three times the others', and there is one per chunk.
    Gzip(Box<MultiGzDecoder<Lines>>),
    Zstd(zstd::stream::write::Decoder<'static, Lines>),
    Plain(Lines),
}

impl Sink {
    fn lines(&mut self) -> &mut Lines {
        match self {
            Self::Gzip(d) => d.get_mut(),
            Self::Zstd(d) => d.get_mut(),
            Self::Plain(l) => l,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            // Flushed after each slice: a write decoder keeps its last
            // output until the next write otherwise, and a page may need it.
            Self::Gzip(d) => d.write_all(bytes).and_then(|()| d.flush()),
            Self::Zstd(d) => d.write_all(bytes).and_then(|()| d.flush()),
            Self::Plain(l) => l.write_all(bytes),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        match self {
            // Both fail on a stream cut short (no gzip trailer, an
            // incomplete zstd frame): a truncated object is never a shorter
            // list of records.
            Self::Gzip(d) => d.try_finish(),
            Self::Zstd(d) => d.do_finish(),
            Self::Plain(_) => Ok(()),
        }
    }
}

/// Decoded bytes split into lines as they come.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    /// Where the next line starts.
    start: usize,
    /// Where the search for its newline goes on (bytes before it hold none).
    scanned: usize,
    /// Bytes after the last newline written.
    tail: usize,
    /// A line grew past [`MAX_LINE_BYTES`]: its further bytes are dropped,
    /// so a corrupt chunk can't make the reader buffer without limit.
    overlong: bool,
}

impl Write for Lines {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.overlong {
            return Ok(data.len());
        }
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        let last_newline = data.iter().rposition(|&b| b == b'\n');
        let tail = match last_newline {
            Some(at) => data.len() - at - 1,
            None => self.tail + data.len(),
        };
        if tail > MAX_LINE_BYTES {
            self.overlong = true;
            // The whole lines before the long one are still the object's.
            if let Some(at) = last_newline {
                self.buf.extend_from_slice(&data[..=at]);
            }
            return Ok(data.len());
        }
        self.tail = tail;
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// Where the next whole line is in `buf`, newline included.
    fn next_line(&mut self) -> Option<Range<usize>> {
        let found = self.buf[self.scanned..].iter().position(|&b| b == b'\n');
        match found {
            Some(at) => {
                let line = self.start..self.scanned + at + 1;
                self.start = line.end;
                self.scanned = line.end;
                Some(line)
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// The last line, which has no newline after it; once.
    fn rest(&mut self) -> Option<Range<usize>> {
        let line = self.start..self.buf.len();
        self.start = line.end;
        self.scanned = line.end;
        (!line.is_empty()).then_some(line)
    }
}

impl ChunkDecoder {
    /// `object` names the chunk in errors.
    pub fn new(object: impl Into<String>) -> Self {
        Self {
            object: object.into(),
            head: Vec::with_capacity(HEAD_BYTES),
            sink: None,
            compression: Compression::None,
            line: 0,
            failed: None,
            finished: false,
            done: false,
        }
    }

    pub fn object(&self) -> &str {
        &self.object
    }

    /// The chunk's compression, as its first bytes tell it (`None` until
    /// four bytes, or the whole of a shorter object, have come).
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Lines handed out so far.
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    /// The object's next bytes. A failure to decode them is kept and comes
    /// out of [`Self::next_record`] after the records decoded before it.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.failed.is_some() || self.finished {
            return;
        }
        if self.sink.is_none() {
            let take = bytes.len().min(HEAD_BYTES - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.head.len() < HEAD_BYTES {
                return;
            }
            self.open();
        }
        for slice in bytes.chunks(FEED_BYTES) {
            if let Some(sink) = self.sink.as_mut()
                && let Err(error) = sink.push(slice)
            {
                self.failed = Some(error);
                return;
            }
        }
    }

    /// The object ended: what is left is its last line, and a compressed
    /// stream that is not complete here is truncated.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        if self.sink.is_none() {
            self.open();
        }
        if self.failed.is_none()
            && let Some(sink) = self.sink.as_mut()
            && let Err(error) = sink.finish()
        {
            self.failed = Some(error);
        }
        self.finished = true;
    }

    fn open(&mut self) {
        let head = std::mem::take(&mut self.head);
        self.compression = Compression::sniff(&head);
        let lines = Lines::default();
        let sink = match self.compression {
            Compression::Gzip => Sink::Gzip(Box::new(MultiGzDecoder::new(lines))),
            Compression::Zstd => match zstd::stream::write::Decoder::new(lines) {
                Ok(decoder) => Sink::Zstd(decoder),
                Err(error) => {
                    self.failed = Some(error);
                    return;
                }
            },
            Compression::None => Sink::Plain(lines),
        };
        let sink = self.sink.insert(sink);
        if let Err(error) = sink.push(&head) {
            self.failed = Some(error);
        }
    }

    /// The next record decoded, or `None` when more bytes are needed (or,
    /// after [`Self::finish`], at the end). After an error, `None`: the
    /// position in the stream is unknown, so nothing past a gap is read.
    pub fn next_record(&mut self) -> Option<Result<Record, ChunkError>> {
        if self.done {
            return None;
        }
        let item = self.next_line();
        if !matches!(item, None | Some(Ok(_))) || (item.is_none() && self.finished) {
            self.done = true;
        }
        item
    }

    fn next_line(&mut self) -> Option<Result<Record, ChunkError>> {
        loop {
            let Some(sink) = self.sink.as_mut() else {
                return self.failure();
            };
            let lines = sink.lines();
            let range = match lines.next_line() {
                Some(range) => range,
                None if lines.overlong => {
                    return Some(Err(ChunkError::LineTooLong {
                        object: self.object.clone(),
                        line: self.line + 1,
                    }));
                }
                None if self.failed.is_some() => return self.failure(),
                None if self.finished => lines.rest()?,
                None => return None,
            };
            self.line += 1;
            let text = trim_line_end(&lines.buf[range]);
            if text.iter().all(u8::is_ascii_whitespace) {
                // Tolerate blank lines (a trailing newline in a hand-made file).
                continue;
            }
            return Some(Record::from_line(text).map_err(|source| ChunkError::Line {
                object: self.object.clone(),
                line: self.line,
                source,
            }));
        }
    }

    fn failure(&mut self) -> Option<Result<Record, ChunkError>> {
        let source = self.failed.take()?;
        Some(Err(ChunkError::Corrupt {
            object: self.object.clone(),
            compression: self.compression,
            line: self.line,
            source,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chunk::encode;
    use crate::model::record::tests::record;

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                data: (0..(i % 200)).map(|b| (b * 7 + i) as u8).collect(),
                ..record(0, i)
            })
            .collect()
    }

    /// Feeds `bytes` in pieces of `piece`, taking records out as they come.
    fn pushed(bytes: &[u8], piece: usize) -> Result<Vec<Record>, ChunkError> {
        let mut decoder = ChunkDecoder::new("obj");
        let mut out = Vec::new();
        for piece in bytes.chunks(piece) {
            decoder.feed(piece);
            while let Some(record) = decoder.next_record() {
                out.push(record?);
            }
        }
        decoder.finish();
        while let Some(record) = decoder.next_record() {
            out.push(record?);
        }
        Ok(out)
    }

    #[test]
    fn any_split_of_the_bytes_decodes_the_same_records() {
        let input = records(400);
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let (bytes, _) = encode("obj", &input, compression).unwrap();
            for piece in [1, 3, 4, 1000, FEED_BYTES + 1, bytes.len()] {
                assert_eq!(
                    pushed(&bytes, piece).unwrap(),
                    input,
                    "{compression} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn records_come_out_while_the_object_is_still_arriving() {
        let input = records(2000);
        let (bytes, _) = encode("obj", &input, Compression::Gzip).unwrap();
        let mut decoder = ChunkDecoder::new("obj");
        decoder.feed(&bytes[..bytes.len() / 2]);
        let mut early = 0;
        while let Some(record) = decoder.next_record() {
            assert_eq!(record.unwrap(), input[early]);
            early += 1;
        }
        assert!(early > 0 && early < input.len(), "{early}");
        assert_eq!(decoder.compression(), Compression::Gzip);
        // Half the object gives no error yet: it may still come.
        assert!(decoder.next_record().is_none());
    }

    #[test]
    fn a_cut_stream_yields_its_whole_lines_then_the_error() {
        let input = records(2000);
        for compression in [Compression::Gzip, Compression::Zstd] {
            let (bytes, _) = encode("obj", &input, compression).unwrap();
            let mut decoder = ChunkDecoder::new("obj");
            decoder.feed(&bytes[..bytes.len() - 9]);
            decoder.finish();
            let mut read = Vec::new();
            let error = loop {
                match decoder.next_record() {
                    Some(Ok(record)) => read.push(record),
                    Some(Err(error)) => break error,
                    None => panic!("{compression}: a cut stream ended cleanly"),
                }
            };
            assert_eq!(read, input[..read.len()], "{compression}");
            assert!(
                matches!(error, ChunkError::Corrupt { line, .. } if line == read.len() as u64),
                "{compression}: {error:?}"
            );
            assert!(decoder.next_record().is_none(), "nothing after the error");
        }
    }

    #[test]
    fn an_overlong_line_is_refused_without_holding_it() {
        let mut bytes = Vec::new();
        records(2).iter().for_each(|r| r.write_line(&mut bytes));
        bytes.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        let mut decoder = ChunkDecoder::new("big");
        for piece in bytes.chunks(64 * 1024) {
            decoder.feed(piece);
        }
        assert!(decoder.next_record().unwrap().is_ok());
        assert!(decoder.next_record().unwrap().is_ok());
        let error = decoder.next_record().unwrap().unwrap_err();
        assert!(
            matches!(error, ChunkError::LineTooLong { line: 3, .. }),
            "{error:?}"
        );
        let lines = decoder.sink.as_mut().unwrap().lines();
        assert!(lines.buf.len() <= MAX_LINE_BYTES + 64 * 1024);
    }

    #[test]
    fn a_tiny_or_empty_object_is_read_whole_at_its_end() {
        assert!(pushed(b"", 1).unwrap().is_empty());
        assert!(pushed(b"\n\n", 1).unwrap().is_empty());
        let error = pushed(b"{}", 1).unwrap_err();
        assert!(
            matches!(error, ChunkError::Line { line: 1, .. }),
            "{error:?}"
        );
    }
}
