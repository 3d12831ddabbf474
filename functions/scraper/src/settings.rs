//! The scraper's settings, read once per container from the environment
//! (failing fast with the variable's name and what it accepts):
//!
//! - `SCRAPER_MAX_RECORDS_PER_CHUNK` (default 100000): records per chunk, and
//!   so per step, at most.
//! - `SCRAPER_MAX_ATTEMPTS` (default 5): attempts per AWS request.
//! - `SCRAPER_MAX_STEP_SECONDS` (default 0: the function's timeout): an
//!   invocation returns within this many seconds, as if the function's
//!   timeout were this short (it stops reading a third of it, at most 20 s,
//!   before). Shorter steps show progress sooner and re-read less when a
//!   step fails.

use std::time::Duration;

use rewind_engine::jobs::scrape::DEFAULT_MAX_RECORDS_PER_CHUNK;
use rewind_function::settings::{SettingError, number};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub max_records_per_chunk: u64,
    pub max_attempts: u32,
    /// `None`: the function's timeout.
    pub max_step: Option<Duration>,
}

impl Settings {
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let max_records_per_chunk = number(
            &var,
            "SCRAPER_MAX_RECORDS_PER_CHUNK",
            DEFAULT_MAX_RECORDS_PER_CHUNK,
            1..=10_000_000,
        )?;
        let max_attempts = number(&var, "SCRAPER_MAX_ATTEMPTS", 5, 1..=20)? as u32;
        let max_step = match number(&var, "SCRAPER_MAX_STEP_SECONDS", 0, 0..=900)? {
            0 => None,
            seconds => Some(Duration::from_secs(seconds)),
        };
        Ok(Self {
            max_records_per_chunk,
            max_attempts,
            max_step,
        })
    }
}

#[cfg(test)]
mod tests {
    use rewind_function::settings::vars;

    use super::*;

    #[test]
    fn defaults_and_settings() {
        let defaults = Settings::from_env(vars(&[])).unwrap();
        assert_eq!(
            defaults,
            Settings {
                max_records_per_chunk: 100_000,
                max_attempts: 5,
                max_step: None,
            }
        );
        let set = Settings::from_env(vars(&[
            ("SCRAPER_MAX_RECORDS_PER_CHUNK", "100"),
            ("SCRAPER_MAX_ATTEMPTS", "8"),
            ("SCRAPER_MAX_STEP_SECONDS", "6"),
        ]))
        .unwrap();
        assert_eq!(set.max_records_per_chunk, 100);
        assert_eq!(set.max_attempts, 8);
        assert_eq!(set.max_step, Some(Duration::from_secs(6)));
    }

    #[test]
    fn bad_settings_name_the_variable_and_the_accepted_values() {
        let cases = [
            (
                ("SCRAPER_MAX_RECORDS_PER_CHUNK", "0"),
                "SCRAPER_MAX_RECORDS_PER_CHUNK is \"0\"; accepted values: a whole number from 1 to 10000000",
            ),
            (
                ("SCRAPER_MAX_ATTEMPTS", "many"),
                "SCRAPER_MAX_ATTEMPTS is \"many\"; accepted values: a whole number from 1 to 20",
            ),
            (
                ("SCRAPER_MAX_STEP_SECONDS", "901"),
                "SCRAPER_MAX_STEP_SECONDS is \"901\"; accepted values: a whole number from 0 to 900",
            ),
        ];
        for (var, expected) in cases {
            let err = Settings::from_env(vars(&[var])).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
