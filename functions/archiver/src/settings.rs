//! The archiver's settings, read once per container from the environment
//! (failing fast with the variable's name and what it accepts):
//!
//! - `ARCHIVE_BUCKET` (required): the archive bucket.
//! - `ARCHIVE_PREFIX` (default `archive`): key prefix.
//! - `ARCHIVE_COMPRESSION` (`zstd` default, `gzip`).
//! - `ARCHIVE_COMPRESSION_LEVEL` (unset or empty: 1 for zstd, 2 for gzip;
//!   BENCHMARKS.md has the CPU and size of each level): 1 to 9 for gzip, 1
//!   to 19 for zstd.
//! - `ARCHIVE_DEAGGREGATE` (`false` default): store KPL user records one per
//!   line in S3 instead of the aggregates as received.
//! - `ARCHIVE_TABLE` (optional): the DynamoDB archive table; unset, no
//!   DynamoDB archive.
//! - `ARCHIVE_MODE` (`ALL` default, `LATEST`, `ALL,LATEST`, `NONE`): what the
//!   table keeps for streams without a `StreamArchiveMode` tag.
//! - `ARCHIVE_TTL_SECONDS` (default none): items expire this long after
//!   archival, unless the stream's `ArchiveTTL` tag says otherwise.
//! - `ARCHIVE_USE_STREAM_TAGS` (`false` default): read `StreamArchiveMode`
//!   and `ArchiveTTL` from each stream's tags, once per container.
//! - `ARCHIVE_TABLE_CONCURRENCY` (default 16, 1 to 64): DynamoDB requests
//!   in flight at once per mode (BatchWriteItem calls for `ALL`,
//!   conditional puts for `LATEST`).
//! - `ARCHIVE_MAX_ATTEMPTS` (default 5): attempts per AWS request, with the
//!   SDK's jittered backoff, before records are reported as failed.

use std::time::Duration;

use rewind_engine::model::archive::{ArchiveLayout, DEFAULT_MAX_OBJECT_BYTES};
use rewind_engine::model::chunk::Compression;
use rewind_engine::sinks::dynamodb::{ArchiveMode, DEFAULT_WRITE_CONCURRENCY, StreamSettings};
use rewind_engine::sinks::s3_archive::default_level;
use rewind_function::settings::{SettingError, flag, number, required, text};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub bucket: String,
    pub layout: ArchiveLayout,
    pub deaggregate: bool,
    pub table: Option<String>,
    pub dynamo_defaults: StreamSettings,
    pub use_stream_tags: bool,
    pub table_concurrency: usize,
    pub max_attempts: u32,
}

impl Settings {
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let bucket = required(&var, "ARCHIVE_BUCKET", "the name of the archive bucket")?;
        let prefix = text(&var, "ARCHIVE_PREFIX", "archive")
            .trim_matches('/')
            .to_owned();
        // Zstd by default: the cheapest compression near gzip's size
        // (BENCHMARKS.md, "Archiver"); Athena and DuckDB read both.
        let compression = match var("ARCHIVE_COMPRESSION") {
            None => Compression::Zstd,
            Some(value) => match value.parse() {
                Ok(c @ (Compression::Gzip | Compression::Zstd)) => c,
                _ => {
                    return Err(SettingError::invalid(
                        "ARCHIVE_COMPRESSION",
                        value,
                        "gzip, zstd",
                    ));
                }
            },
        };
        let levels = compression.levels();
        // Empty is the template's default: the compression's own level.
        let compression_level = match var("ARCHIVE_COMPRESSION_LEVEL").filter(|v| !v.is_empty()) {
            None => default_level(compression),
            Some(value) => match value.parse::<u32>() {
                Ok(level) if levels.contains(&level) => Some(level),
                _ => {
                    return Err(SettingError::invalid(
                        "ARCHIVE_COMPRESSION_LEVEL",
                        value,
                        format!(
                            "a whole number from {} to {} for {compression} (1 to 9 for gzip, 1 to 19 for zstd)",
                            levels.start(),
                            levels.end()
                        ),
                    ));
                }
            },
        };
        let table_concurrency = number(
            &var,
            "ARCHIVE_TABLE_CONCURRENCY",
            DEFAULT_WRITE_CONCURRENCY as u64,
            1..=64,
        )? as usize;
        let deaggregate = flag(&var, "ARCHIVE_DEAGGREGATE")?;
        let use_stream_tags = flag(&var, "ARCHIVE_USE_STREAM_TAGS")?;
        let table = var("ARCHIVE_TABLE").filter(|t| !t.is_empty());
        let modes = match var("ARCHIVE_MODE") {
            None => vec![ArchiveMode::All],
            Some(value) if value.trim().eq_ignore_ascii_case("NONE") => Vec::new(),
            Some(value) => {
                let mut modes = value
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<Vec<ArchiveMode>, _>>()
                    .map_err(|_| {
                        SettingError::invalid(
                            "ARCHIVE_MODE",
                            value.clone(),
                            "ALL, LATEST, ALL,LATEST, NONE",
                        )
                    })?;
                modes.sort();
                modes.dedup();
                modes
            }
        };
        let ttl = match var("ARCHIVE_TTL_SECONDS").filter(|v| !v.is_empty()) {
            None => None,
            Some(value) => match value.parse::<u64>() {
                Ok(0) => None,
                Ok(n) => Some(Duration::from_secs(n)),
                Err(_) => {
                    return Err(SettingError::invalid(
                        "ARCHIVE_TTL_SECONDS",
                        value,
                        "a whole number of seconds (0: no expiry)",
                    ));
                }
            },
        };
        let max_attempts = number(&var, "ARCHIVE_MAX_ATTEMPTS", 5, 1..=20)? as u32;
        Ok(Self {
            bucket,
            layout: ArchiveLayout {
                prefix,
                compression,
                compression_level,
                max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            },
            deaggregate,
            table,
            dynamo_defaults: StreamSettings { modes, ttl },
            use_stream_tags,
            table_concurrency,
            max_attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use rewind_function::settings::vars;

    use super::*;

    fn config(set: &[(&str, &str)]) -> Result<Settings, SettingError> {
        Settings::from_env(vars(set))
    }

    #[test]
    fn defaults() {
        let c = config(&[("ARCHIVE_BUCKET", "b")]).unwrap();
        assert_eq!(c.bucket, "b");
        assert_eq!(c.layout.prefix, "archive");
        assert_eq!(c.layout.compression, Compression::Zstd);
        assert_eq!(c.layout.compression_level, Some(1));
        // The template passes an empty level for the compression's own.
        let gzip = config(&[
            ("ARCHIVE_BUCKET", "b"),
            ("ARCHIVE_COMPRESSION", "gzip"),
            ("ARCHIVE_COMPRESSION_LEVEL", ""),
        ])
        .unwrap();
        assert_eq!(gzip.layout.compression, Compression::Gzip);
        assert_eq!(gzip.layout.compression_level, Some(2));
        assert_eq!(c.table_concurrency, 16);
        assert!(!c.deaggregate);
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.table, None);
        assert_eq!(c.dynamo_defaults.modes, vec![ArchiveMode::All]);
        assert_eq!(c.dynamo_defaults.ttl, None);
        assert!(!c.use_stream_tags);
    }

    #[test]
    fn settings() {
        let c = config(&[
            ("ARCHIVE_BUCKET", "b"),
            ("ARCHIVE_PREFIX", "/data/kinesis/"),
            ("ARCHIVE_COMPRESSION", "zstd"),
            ("ARCHIVE_COMPRESSION_LEVEL", "12"),
            ("ARCHIVE_TABLE_CONCURRENCY", "64"),
            ("ARCHIVE_DEAGGREGATE", "true"),
            ("ARCHIVE_MAX_ATTEMPTS", "8"),
            ("ARCHIVE_TABLE", "archive"),
            ("ARCHIVE_MODE", "latest,ALL,LATEST"),
            ("ARCHIVE_TTL_SECONDS", "86400"),
            ("ARCHIVE_USE_STREAM_TAGS", "true"),
        ])
        .unwrap();
        assert_eq!(c.table.as_deref(), Some("archive"));
        assert_eq!(
            c.dynamo_defaults.modes,
            vec![ArchiveMode::All, ArchiveMode::Latest]
        );
        assert_eq!(c.dynamo_defaults.ttl, Some(Duration::from_secs(86400)));
        assert!(c.use_stream_tags);
        let none = config(&[("ARCHIVE_BUCKET", "b"), ("ARCHIVE_MODE", "none")]).unwrap();
        assert!(none.dynamo_defaults.modes.is_empty());
        assert_eq!(c.layout.prefix, "data/kinesis");
        assert_eq!(c.layout.compression, Compression::Zstd);
        assert_eq!(c.layout.compression_level, Some(12));
        assert_eq!(c.table_concurrency, 64);
        assert!(c.deaggregate);
        assert_eq!(c.max_attempts, 8);
    }

    #[test]
    fn bad_settings_name_the_variable_and_the_accepted_values() {
        let cases = [
            (vec![], "ARCHIVE_BUCKET is required"),
            (vec![("ARCHIVE_BUCKET", "")], "ARCHIVE_BUCKET is required"),
            (
                vec![("ARCHIVE_BUCKET", "b"), ("ARCHIVE_COMPRESSION", "none")],
                "ARCHIVE_COMPRESSION is \"none\"; accepted values: gzip, zstd",
            ),
            (
                vec![
                    ("ARCHIVE_BUCKET", "b"),
                    ("ARCHIVE_COMPRESSION", "gzip"),
                    ("ARCHIVE_COMPRESSION_LEVEL", "12"),
                ],
                "ARCHIVE_COMPRESSION_LEVEL is \"12\"; accepted values: a whole number from 1 to 9 for gzip (1 to 9 for gzip, 1 to 19 for zstd)",
            ),
            (
                vec![
                    ("ARCHIVE_BUCKET", "b"),
                    ("ARCHIVE_COMPRESSION", "zstd"),
                    ("ARCHIVE_COMPRESSION_LEVEL", "0"),
                ],
                "ARCHIVE_COMPRESSION_LEVEL is \"0\"; accepted values: a whole number from 1 to 19 for zstd",
            ),
            (
                vec![
                    ("ARCHIVE_BUCKET", "b"),
                    ("ARCHIVE_COMPRESSION_LEVEL", "fast"),
                ],
                "ARCHIVE_COMPRESSION_LEVEL is \"fast\"; accepted values: a whole number from 1 to 19 for zstd",
            ),
            (
                vec![("ARCHIVE_BUCKET", "b"), ("ARCHIVE_TABLE_CONCURRENCY", "0")],
                "ARCHIVE_TABLE_CONCURRENCY is \"0\"; accepted values: a whole number from 1 to 64",
            ),
            (
                vec![("ARCHIVE_BUCKET", "b"), ("ARCHIVE_DEAGGREGATE", "yes")],
                "ARCHIVE_DEAGGREGATE is \"yes\"; accepted values: true, false",
            ),
            (
                vec![("ARCHIVE_BUCKET", "b"), ("ARCHIVE_MAX_ATTEMPTS", "0")],
                "ARCHIVE_MAX_ATTEMPTS is \"0\"; accepted values: a whole number from 1 to 20",
            ),
            (
                vec![("ARCHIVE_BUCKET", "b"), ("ARCHIVE_MODE", "ALL,SOME")],
                "ARCHIVE_MODE is \"ALL,SOME\"; accepted values: ALL, LATEST, ALL,LATEST, NONE",
            ),
            (
                vec![("ARCHIVE_BUCKET", "b"), ("ARCHIVE_TTL_SECONDS", "1d")],
                "ARCHIVE_TTL_SECONDS is \"1d\"; accepted values: a whole number of seconds",
            ),
            (
                vec![("ARCHIVE_BUCKET", "b"), ("ARCHIVE_USE_STREAM_TAGS", "1")],
                "ARCHIVE_USE_STREAM_TAGS is \"1\"; accepted values: true, false",
            ),
        ];
        for (vars, expected) in cases {
            let err = config(&vars).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
