//! A run's folder belongs to one request. Output folders are named by the
//! run id alone (the execution name), and execution names are unique only
//! per state machine and for 90 days: a reused name would otherwise let a
//! scrape step delete an earlier run's chunks, a manifest pick up another
//! run's leftovers, or a replay step adopt another run's checkpoint and
//! skip records.
//!
//! So the plan claims the folder first, with one create-only write
//! ([`CreateNew`]: S3 `If-None-Match: *`) of a small run record holding a
//! hash of the request. A folder claimed by a different request refuses the
//! plan (`InvalidRequest`, naming the run id) before anything is read,
//! written or delivered; a plan retried with the same request finds its own
//! record and goes on.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::jobs::replay::{ReplayError, ReplayRequest};
use crate::jobs::scrape::{ScrapeError, ScrapeRequest, ScraperError};
use crate::request::RequestError;
use crate::store::{CreateNew, Created, ObjectReader, PutObject, StoreError};

/// The run record's name inside the run's folder.
pub const RUN_RECORD: &str = "_run.json";

/// Top-level request fields that name or schedule the run without changing
/// what it reads or writes: a retry may differ in them.
const NOT_HASHED: &[&str] = &["runId", "maxConcurrency"];

/// What a claimed folder holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub run_id: String,
    /// `scrape` or `replay`.
    pub kind: String,
    /// SHA-256 (hex) of the canonical request: [`request_hash`].
    pub request_sha256: String,
}

/// Why a folder could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another request holds the folder: the run id must change.
    #[error(transparent)]
    Taken(#[from] RequestError),
    /// Writing or reading the run record failed (retry the plan).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// SHA-256 (hex) of the request as parsed, in canonical JSON: object keys
/// sorted at every level, defaults filled in (the typed request is what is
/// serialised), [`NOT_HASHED`] fields left out. Two documents that ask for
/// the same run hash the same whatever their key order or spacing.
pub fn request_hash<T: Serialize>(request: &T) -> String {
    let mut value = serde_json::to_value(request).expect("requests always serialise");
    if let Value::Object(fields) = &mut value {
        for field in NOT_HASHED {
            fields.remove(*field);
        }
    }
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&fields[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

/// Claims `<folder>/_run.json` for `record`: `Ok` when the folder is new or
/// already this request's, [`ClaimError::Taken`] (field `runId`) when
/// another request holds it. `location` names the folder in the error
/// (`s3://bucket/prefix/run`).
pub async fn claim<S: CreateNew + ObjectReader>(
    store: &S,
    folder: &str,
    location: &str,
    record: &RunRecord,
) -> Result<(), ClaimError> {
    let key = format!("{}/{RUN_RECORD}", folder.trim_end_matches('/'));
    let body = serde_json::to_vec(record).expect("a run record always serialises");
    // A record deleted between the write and the read (someone cleaning the
    // folder up) is claimed again; twice is enough for any such race.
    for _ in 0..2 {
        let object = PutObject {
            key: key.clone(),
            body: body.clone(),
            content_type: "application/json",
            content_encoding: None,
        };
        if store.create_new(object).await? == Created::New {
            return Ok(());
        }
        let existing = match store.get(&key).await {
            Ok(existing) => existing,
            Err(error) if error.is_not_found() => continue,
            Err(error) => return Err(error.into()),
        };
        return match serde_json::from_slice::<RunRecord>(&existing) {
            Ok(held) if held == *record => Ok(()),
            Ok(held) => Err(taken(record, location, &held.kind)),
            Err(_) => Err(taken(record, location, "an unreadable")),
        };
    }
    Err(taken(record, location, "a vanishing"))
}

/// The run id of the scrape a replay of a `SCRAPE` source runs first: its
/// folder is `<prefix>/replay=<runId>`. A scrape run id (an execution name,
/// checked by [`crate::jobs::step::check_run_id`]) never holds `=`, so no
/// scrape execution can write there, and the replay's scrape can't touch a
/// scrape execution's folder of the same name.
pub fn replay_scrape_run_id(run_id: &str) -> String {
    format!("replay={run_id}")
}

/// Claims a scrape's folder, `<prefix>/<runId>`, for `request`.
pub async fn scrape<S: CreateNew + ObjectReader>(
    store: &S,
    request: &ScrapeRequest,
    run_id: &str,
) -> Result<(), ScraperError> {
    let folder = request.run_folder(run_id);
    let location = format!("s3://{}/{folder}", request.output.bucket);
    let record = RunRecord {
        run_id: run_id.to_owned(),
        kind: "scrape".to_owned(),
        request_sha256: request_hash(request),
    };
    claim(store, &folder, &location, &record)
        .await
        .map_err(|error| match error {
            ClaimError::Taken(error) => error.into(),
            ClaimError::Store(error) => ScrapeError::Store(error).into(),
        })
}

/// Claims a replay's progress folder (`<output prefix>/<runId>`, in
/// `bucket`), where its checkpoints live, for `request`.
pub async fn replay<S: CreateNew + ObjectReader>(
    store: &S,
    bucket: &str,
    folder: &str,
    request: &ReplayRequest,
    run_id: &str,
) -> Result<(), ReplayError> {
    let location = format!("s3://{bucket}/{folder}");
    let record = RunRecord {
        run_id: run_id.to_owned(),
        kind: "replay".to_owned(),
        request_sha256: request_hash(request),
    };
    claim(store, folder, &location, &record)
        .await
        .map_err(|error| match error {
            ClaimError::Taken(error) => error.into(),
            ClaimError::Store(error) => ReplayError::Progress(error),
        })
}

fn taken(record: &RunRecord, location: &str, holder: &str) -> ClaimError {
    RequestError::new(
        "runId",
        format!(
            "{:?} already names {holder} run of a different request in {location}/ (its {RUN_RECORD} says so), and a folder holds one run; accepted values: a run id not used before for this output (a new execution name), or exactly the request of that run to go on with it",
            record.run_id
        ),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::MemoryStore;

    fn record(hash: &str) -> RunRecord {
        RunRecord {
            run_id: "nightly".into(),
            kind: "scrape".into(),
            request_sha256: hash.into(),
        }
    }

    #[test]
    fn the_hash_ignores_key_order_spacing_and_the_run_s_name() {
        let a = json!({"stream": "s", "output": {"bucket": "b", "prefix": "p"}, "runId": "x"});
        let b: Value = serde_json::from_str(
            r#"{ "output" : {"prefix":"p","bucket":"b"}, "runId":"y", "maxConcurrency": 3, "stream":"s" }"#,
        )
        .unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_eq!(request_hash(&a).len(), 64);
        let c = json!({"stream": "s", "output": {"bucket": "b", "prefix": "q"}});
        assert_ne!(request_hash(&a), request_hash(&c));
        // SHA-256 of "{}", the empty request once its run id is left out.
        assert_eq!(
            request_hash(&json!({"runId": "x"})),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[tokio::test]
    async fn the_first_claim_wins_the_same_request_goes_on_another_is_refused() {
        let store = MemoryStore::default();
        claim(
            &store,
            "scrapes/nightly",
            "s3://b/scrapes/nightly",
            &record("h1"),
        )
        .await
        .unwrap();
        claim(
            &store,
            "scrapes/nightly/",
            "s3://b/scrapes/nightly",
            &record("h1"),
        )
        .await
        .expect("a retried plan of the same request goes on");
        let error = claim(
            &store,
            "scrapes/nightly",
            "s3://b/scrapes/nightly",
            &record("h2"),
        )
        .await
        .unwrap_err();
        let ClaimError::Taken(error) = error else {
            panic!("{error:?}")
        };
        assert_eq!(error.field, "runId");
        assert!(error.message.contains("\"nightly\""), "{error}");
        assert!(error.message.contains("s3://b/scrapes/nightly/"), "{error}");
        assert!(error.message.contains("accepted values"), "{error}");
        let kept: RunRecord =
            serde_json::from_slice(&store.objects()["scrapes/nightly/_run.json"].body).unwrap();
        assert_eq!(kept, record("h1"), "the first claim is kept");
    }

    #[tokio::test]
    async fn a_folder_holding_something_else_is_not_taken_over() {
        let store = MemoryStore::default();
        store
            .create_new(PutObject {
                key: "dlq/replays/r/_run.json".into(),
                body: b"not a run record".to_vec(),
                content_type: "application/json",
                content_encoding: None,
            })
            .await
            .unwrap();
        let error = claim(
            &store,
            "dlq/replays/r",
            "s3://b/dlq/replays/r",
            &record("h"),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, ClaimError::Taken(_)), "{error:?}");
    }
}
