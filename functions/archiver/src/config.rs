//! The archiver's settings, read once from the environment.

use rewind_engine::archive::{ArchiveLayout, DEFAULT_MAX_OBJECT_BYTES};
use rewind_engine::chunk::Compression;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub bucket: String,
    pub layout: ArchiveLayout,
    pub deaggregate: bool,
    pub s3_max_attempts: u32,
}

/// A setting the function can't start with; names the variable and what it
/// accepts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {name} is required: {what}")]
    Missing {
        name: &'static str,
        what: &'static str,
    },
    #[error("environment variable {name} is {value:?}; accepted values: {accepted}")]
    Invalid {
        name: &'static str,
        value: String,
        accepted: &'static str,
    },
}

impl Config {
    /// `var` looks a variable up (`std::env::var` in the function; a map in
    /// tests, so they never touch the process environment).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let bucket =
            var("ARCHIVE_BUCKET")
                .filter(|b| !b.is_empty())
                .ok_or(ConfigError::Missing {
                    name: "ARCHIVE_BUCKET",
                    what: "the name of the archive bucket",
                })?;
        let prefix = var("ARCHIVE_PREFIX")
            .unwrap_or_else(|| "archive".to_owned())
            .trim_matches('/')
            .to_owned();
        let compression = match var("ARCHIVE_COMPRESSION") {
            None => Compression::Gzip,
            Some(value) => match value.parse() {
                Ok(c @ (Compression::Gzip | Compression::Zstd)) => c,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "ARCHIVE_COMPRESSION",
                        value,
                        accepted: "gzip, zstd",
                    });
                }
            },
        };
        let deaggregate = match var("ARCHIVE_DEAGGREGATE").as_deref() {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "ARCHIVE_DEAGGREGATE",
                    value: other.to_owned(),
                    accepted: "true, false",
                });
            }
        };
        let s3_max_attempts = match var("ARCHIVE_S3_MAX_ATTEMPTS") {
            None => 5,
            Some(value) => match value.parse::<u32>() {
                Ok(n @ 1..=20) => n,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "ARCHIVE_S3_MAX_ATTEMPTS",
                        value,
                        accepted: "a whole number from 1 to 20",
                    });
                }
            },
        };
        Ok(Self {
            bucket,
            layout: ArchiveLayout {
                prefix,
                compression,
                max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            },
            deaggregate,
            s3_max_attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_env(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[("ARCHIVE_BUCKET", "b")]).unwrap();
        assert_eq!(c.bucket, "b");
        assert_eq!(c.layout.prefix, "archive");
        assert_eq!(c.layout.compression, Compression::Gzip);
        assert!(!c.deaggregate);
        assert_eq!(c.s3_max_attempts, 5);
    }

    #[test]
    fn settings() {
        let c = config(&[
            ("ARCHIVE_BUCKET", "b"),
            ("ARCHIVE_PREFIX", "/data/kinesis/"),
            ("ARCHIVE_COMPRESSION", "zstd"),
            ("ARCHIVE_DEAGGREGATE", "true"),
            ("ARCHIVE_S3_MAX_ATTEMPTS", "8"),
        ])
        .unwrap();
        assert_eq!(c.layout.prefix, "data/kinesis");
        assert_eq!(c.layout.compression, Compression::Zstd);
        assert!(c.deaggregate);
        assert_eq!(c.s3_max_attempts, 8);
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
                vec![("ARCHIVE_BUCKET", "b"), ("ARCHIVE_DEAGGREGATE", "yes")],
                "ARCHIVE_DEAGGREGATE is \"yes\"; accepted values: true, false",
            ),
            (
                vec![("ARCHIVE_BUCKET", "b"), ("ARCHIVE_S3_MAX_ATTEMPTS", "0")],
                "ARCHIVE_S3_MAX_ATTEMPTS is \"0\"; accepted values: a whole number from 1 to 20",
            ),
        ];
        for (vars, expected) in cases {
            let err = config(&vars).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
