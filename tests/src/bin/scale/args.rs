//! The scale run's settings, refused before any work when out of range:
//! each error names the flag and the values it accepts.

use std::path::PathBuf;

pub const USAGE: &str = "usage: scale [--shards N] [--records-per-shard N] [--record-bytes N] \
[--sleep-ms MS] [--batch-size N] [--concurrency \"32 1\"] [--out FILE]";

/// What one run measures (see the crate's `bin/scale`).
#[derive(Clone, Debug)]
pub struct Args {
    pub shards: usize,
    pub records_per_shard: usize,
    /// Each record's data, `SLEEP <ms> ` prefix included.
    pub record_bytes: usize,
    /// What `target` takes per batch.
    pub sleep_ms: u64,
    pub batch_size: usize,
    /// Each replay's `maxConcurrency`, run in this order.
    pub concurrency: Vec<usize>,
    pub out: PathBuf,
}

impl Args {
    pub fn default_with_out(out: PathBuf) -> Self {
        Args {
            shards: 32,
            records_per_shard: 1000,
            record_bytes: 1024,
            sleep_ms: 1000,
            batch_size: 100,
            concurrency: vec![32, 1],
            out,
        }
    }

    /// Parses `--flag value` pairs over the defaults.
    pub fn parse(args: impl IntoIterator<Item = String>, out: PathBuf) -> anyhow::Result<Self> {
        let mut parsed = Self::default_with_out(out);
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                anyhow::bail!("{USAGE}");
            }
            let value = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value; {USAGE}"))?;
            match flag.as_str() {
                "--shards" => parsed.shards = number(&flag, &value, 1, 100)?,
                "--records-per-shard" => {
                    parsed.records_per_shard = number(&flag, &value, 1, 100_000)?
                }
                "--record-bytes" => parsed.record_bytes = number(&flag, &value, 64, 1_048_576)?,
                "--sleep-ms" => parsed.sleep_ms = number(&flag, &value, 0, 60_000)? as u64,
                // The mapping's BatchSize range.
                "--batch-size" => parsed.batch_size = number(&flag, &value, 1, 10_000)?,
                "--concurrency" => {
                    parsed.concurrency = value
                        .split_whitespace()
                        .map(|c| number(&flag, c, 1, 1000))
                        .collect::<anyhow::Result<_>>()?;
                    anyhow::ensure!(
                        !parsed.concurrency.is_empty(),
                        "--concurrency: expected one or more numbers, 1 to 1000 (maxConcurrency), such as \"32 1\""
                    );
                }
                "--out" => parsed.out = PathBuf::from(value),
                _ => anyhow::bail!("unknown flag {flag}; {USAGE}"),
            }
        }
        // Every replay needs as many instances of the replay function and
        // of `target` as groups run at once; the stack runs `shards` each.
        if let Some(c) = parsed.concurrency.iter().find(|&&c| c > parsed.shards) {
            anyhow::bail!(
                "--concurrency: {c} is more than --shards ({}); accepted values: 1 to {}",
                parsed.shards,
                parsed.shards
            );
        }
        let prefix = format!("SLEEP {} ", parsed.sleep_ms).len() + 40;
        anyhow::ensure!(
            parsed.record_bytes >= prefix,
            "--record-bytes: {} cannot hold the record's SLEEP prefix and its id; accepted values: {prefix} to 1048576",
            parsed.record_bytes
        );
        Ok(parsed)
    }
}

fn number(flag: &str, value: &str, min: usize, max: usize) -> anyhow::Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => anyhow::bail!("{flag}: {value:?} is not accepted; accepted values: {min} to {max}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Args> {
        Args::parse(args.iter().map(|s| s.to_string()), PathBuf::from("out.md"))
    }

    #[test]
    fn defaults_are_the_issues_run() {
        let args = parse(&[]).unwrap();
        assert_eq!((args.shards, args.concurrency), (32, vec![32, 1]));
    }

    #[test]
    fn bad_values_name_the_flag_and_the_accepted_values() {
        for (args, flag, accepted) in [
            (&["--shards", "0"][..], "--shards", "1 to 100"),
            (&["--batch-size", "x"][..], "--batch-size", "1 to 10000"),
            (
                &["--shards", "4", "--concurrency", "8"][..],
                "--concurrency",
                "1 to 4",
            ),
            (
                &["--record-bytes", "63"][..],
                "--record-bytes",
                "64 to 1048576",
            ),
        ] {
            let error = parse(args).unwrap_err().to_string();
            assert!(
                error.starts_with(flag) && error.contains(accepted),
                "{error}"
            );
        }
        assert!(parse(&["--nope", "1"]).is_err());
        assert!(parse(&["--shards"]).is_err());
    }
}
