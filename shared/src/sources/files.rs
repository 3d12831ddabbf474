//! Local record-line files as a source (`rewind replay --files`, `rewind
//! reinject --files`): scrape chunks, archive objects, `rewind convert`
//! output. Each file holds one shard's records in sequence order; a shard's
//! files go in order of their first record and may overlap (archive objects
//! of a re-delivered batch): each record is read once.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::model::chunk::{ChunkError, ChunkReader};
use crate::model::record::Record;
use crate::model::seqno::Position;
use crate::pipeline::dedupe::Dedupe;
use crate::sources::{BoxFuture, Pages, RecordSource, SourceError, SourceStream};

/// Records per page of a file, unless [`FilesSource::with_page`] says.
const PAGE: usize = 1000;

/// Why the files can't be read as a source.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("opening {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("{path}: records of {first} and {other}; each file must hold one shard's records")]
    TwoShards {
        path: String,
        first: String,
        other: String,
    },
    #[error(
        "{path}: record {sequence_number} is not after the one before it; a file must be in sequence order"
    )]
    OutOfOrder {
        path: String,
        sequence_number: String,
    },
}

/// One file, as far as its records tell.
#[derive(Debug, Clone)]
struct FileSpan {
    path: PathBuf,
    first: Position,
    last: Position,
}

/// Local record-line files, checked and indexed when opened (read once,
/// one record at a time).
#[derive(Debug)]
pub struct FilesSource {
    stream_arn: Option<String>,
    stream: String,
    /// Per shard (shard-id order), its files in order of their first record.
    shards: BTreeMap<String, Vec<FileSpan>>,
    page: usize,
}

fn open(path: &Path) -> Result<ChunkReader<'static>, FilesError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| FilesError::Open {
        path: name.clone(),
        source,
    })?;
    Ok(ChunkReader::new(name, file)?)
}

impl FilesSource {
    /// Checks every file; `stream_arn` is the stream the records were read
    /// from, when known (the events' `eventSourceARN`).
    pub fn open(paths: &[PathBuf], stream_arn: Option<String>) -> Result<Self, FilesError> {
        let mut shards: BTreeMap<String, Vec<FileSpan>> = BTreeMap::new();
        let mut stream = None;
        for path in paths {
            let name = path.display().to_string();
            let mut span: Option<(String, Position, Position)> = None;
            for record in open(path)? {
                let record = record?;
                let position = Position::of(&record);
                match &mut span {
                    None => {
                        stream.get_or_insert_with(|| record.stream.clone());
                        span = Some((record.shard_id, position.clone(), position));
                    }
                    Some((shard, _, _)) if *shard != record.shard_id => {
                        return Err(FilesError::TwoShards {
                            path: name,
                            first: shard.clone(),
                            other: record.shard_id,
                        });
                    }
                    Some((_, _, last)) if *last >= position => {
                        return Err(FilesError::OutOfOrder {
                            path: name,
                            sequence_number: record.sequence_number.to_string(),
                        });
                    }
                    Some((_, _, last)) => *last = position,
                }
            }
            if let Some((shard, first, last)) = span {
                shards.entry(shard).or_default().push(FileSpan {
                    path: path.clone(),
                    first,
                    last,
                });
            }
        }
        for files in shards.values_mut() {
            // Stable: a file given twice keeps its place.
            files.sort_by(|a, b| a.first.sequence_number.cmp(&b.first.sequence_number));
        }
        Ok(Self {
            stream_arn,
            stream: stream.unwrap_or_default(),
            shards,
            page: PAGE,
        })
    }

    /// Pages of `records` records (a replay's piece), not [`PAGE`].
    pub fn with_page(mut self, records: usize) -> Self {
        self.page = records.max(1);
        self
    }
}

impl RecordSource for FilesSource {
    fn stream(&self) -> SourceStream {
        match &self.stream_arn {
            Some(arn) => SourceStream::Arn(arn.clone()),
            None => SourceStream::Name(self.stream.clone()),
        }
    }

    fn shards(&self) -> BoxFuture<'_, Result<Vec<Vec<String>>, SourceError>> {
        // Files keep no lineage: every shard is its own group, in shard-id
        // order.
        let groups = self.shards.keys().map(|id| vec![id.clone()]).collect();
        Box::pin(async move { Ok(groups) })
    }

    fn pages<'a>(
        &'a self,
        shard_id: &'a str,
        after: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<Box<dyn Pages + 'a>, SourceError>> {
        let files: Vec<PathBuf> = self
            .shards
            .get(shard_id)
            .into_iter()
            .flatten()
            .filter(|file| after.is_none_or(|after| file.last > *after))
            .map(|file| file.path.clone())
            .collect();
        let pages: Box<dyn Pages + 'a> = Box::new(FilePages {
            files: files.into_iter(),
            reader: None,
            seen: Dedupe::after(after.cloned()),
            page: self.page,
        });
        Box::pin(async move { Ok(pages) })
    }
}

/// A shard's files, a page of records at a time, each record once.
struct FilePages {
    files: std::vec::IntoIter<PathBuf>,
    reader: Option<ChunkReader<'static>>,
    seen: Dedupe,
    page: usize,
}

impl FilePages {
    fn read(&mut self) -> Result<Option<Vec<Record>>, FilesError> {
        let mut page = Vec::new();
        while page.len() < self.page {
            let reader = match &mut self.reader {
                Some(reader) => reader,
                None => match self.files.next() {
                    Some(path) => self.reader.insert(open(&path)?),
                    None if page.is_empty() => return Ok(None),
                    None => break,
                },
            };
            match reader.next() {
                Some(record) => {
                    let record = record?;
                    if self.seen.first_time(&record) {
                        page.push(record);
                    }
                }
                None => self.reader = None,
            }
        }
        Ok(Some(page))
    }
}

impl Pages for FilePages {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Record>>, SourceError>> {
        let page = self.read().map_err(SourceError::from);
        Box::pin(async move { page })
    }
}
