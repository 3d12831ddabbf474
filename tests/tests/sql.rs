//! The README's SQL over the archive, run for real: the real archiver
//! (behind the engine's local event source mapping) writes a stream's
//! archive on the local stack; its objects are copied byte for byte into a
//! folder, and DuckDB (pinned in `bin/requirements-tools.txt`, installed by
//! `bin/test tools`) runs the README's "Query the archive locally"
//! statements on them.
//!
//! The DuckDB statements are tied to the Athena ones they stand for: the
//! view's columns are the Athena table's, with DuckDB's names for the same
//! types, and the query is the Athena query with exactly the listed
//! translations. So neither can change without the other.
//!
//! The stream is archived twice with different batch sizes, so the archive
//! holds overlapping objects (as after a bisected or resumed batch): the
//! query's `DISTINCT` must drop the copies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rewind_engine::Record;
use rewind_engine::model::chunk::ChunkReader;
use rewind_local::stack::LOCAL_ARCHIVE_BUCKET;
use rewind_tests::{archive_stream, create_stream, get_object, put_all, unique};
use serde_json::Value;

use crate::stack;

/// What DuckDB's dialect requires of the README's Athena query.
const TRANSLATIONS: [(&str, &str); 3] = [
    ("`", "\""),
    ("from_unixtime(", "to_timestamp("),
    ("from_utf8(", "decode("),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_path_buf()
}

/// The ```sql blocks of the README section headed `heading`.
fn sql_blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n### {heading}\n"))
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let section = &readme[start + 1..];
    // Up to the next heading of this level or above.
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|h| section[1..].find(h).map(|i| i + 1))
        .min()
        .unwrap_or(section.len());
    let section = &section[..end];
    section
        .split("```sql\n")
        .skip(1)
        .map(|block| block[..block.find("```").expect("a closed block")].to_owned())
        .collect()
}

/// The (name, type) columns of the Athena table definition.
fn athena_columns(ddl: &str) -> Vec<(String, String)> {
    let body = &ddl[ddl.find('(').unwrap() + 1..ddl.find("\n)").unwrap()];
    body.split(',')
        .map(|column| {
            let mut words = column.split_whitespace();
            let name = words.next().unwrap().trim_matches('`').to_owned();
            (name, words.next().unwrap().to_owned())
        })
        .collect()
}

/// The `columns = {...}` of the DuckDB view.
fn view_columns(view: &str) -> Vec<(String, String)> {
    let start = view.find("columns = {").unwrap() + "columns = {".len();
    let body = &view[start..start + view[start..].find('}').unwrap()];
    body.split(',')
        .map(|pair| {
            let (name, ty) = pair.split_once(':').unwrap();
            let unquote = |s: &str| s.trim().trim_matches('\'').to_owned();
            (unquote(name), unquote(ty))
        })
        .collect()
}

#[tokio::test]
async fn the_readmes_queries_run_on_duckdb_over_the_archives_objects() -> anyhow::Result<()> {
    let python = repo().join(".tools/venv/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: `bin/test tools` installs DuckDB there",
        python.display()
    );
    let readme = std::fs::read_to_string(repo().join("README.md"))?;
    let athena = sql_blocks(&readme, "With Athena");
    let duckdb = sql_blocks(&readme, "Query the archive locally");
    anyhow::ensure!(
        athena.len() == 2 && duckdb.len() == 2,
        "two statements each"
    );
    let translated = TRANSLATIONS
        .iter()
        .fold(athena[1].clone(), |query, (from, to)| {
            query.replace(from, to)
        });
    assert_eq!(
        duckdb[1], translated,
        "the DuckDB query is the Athena query with only {TRANSLATIONS:?}"
    );
    let types: BTreeMap<&str, &str> = [
        ("string", "VARCHAR"),
        ("bigint", "BIGINT"),
        ("double", "DOUBLE"),
    ]
    .into();
    let expected: Vec<(String, String)> = athena_columns(&athena[0])
        .into_iter()
        .map(|(name, ty)| (name, types[ty.as_str()].to_owned()))
        .collect();
    assert_eq!(
        view_columns(&duckdb[0]),
        expected,
        "the Athena table's columns"
    );

    let stack = stack();
    let clients = stack.archive_clients().await;
    let stream = unique("sql");
    create_stream(&clients.kinesis, &stream, 2).await?;
    let records: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            let payload = format!("{{\"order\":{i},\"note\":\"café, \\\"quoted\\\"\"}}");
            (format!("order-{}", i % 7), payload.into_bytes())
        })
        .collect();
    let accepted = put_all(&clients.kinesis, &stream, records).await?;
    archive_stream(&clients.kinesis, &clients.lambda, &stream, 10, &[]).await?;
    archive_stream(&clients.kinesis, &clients.lambda, &stream, 7, &[]).await?;

    // The objects, copied under their keys; what they hold, deduplicated.
    let scratch = tempfile_dir(&stream)?;
    let prefix = format!("archive/stream={stream}/");
    let listed = clients
        .s3
        .list_objects_v2()
        .bucket(LOCAL_ARCHIVE_BUCKET)
        .prefix(&prefix)
        .send()
        .await?;
    let mut archived: BTreeMap<(String, rewind_engine::model::seqno::SequenceNumber), Record> =
        BTreeMap::new();
    let mut lines = 0;
    let mut hours = Vec::new();
    for object in listed.contents() {
        let key = object.key().unwrap_or_default();
        let body = get_object(&clients.s3, LOCAL_ARCHIVE_BUCKET, key).await?;
        let path = scratch.join(key);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(&path, &body)?;
        if !key.contains("/dt=") {
            continue;
        }
        let dt = key.split("/dt=").nth(1).unwrap().split('/').next().unwrap();
        let hour = key
            .split("/hour=")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        hours.push((dt.to_owned(), hour.to_owned()));
        for record in ChunkReader::new(key.to_owned(), body.as_slice())? {
            let record = record?;
            lines += 1;
            archived.insert(
                (record.shard_id.clone(), record.sequence_number.clone()),
                record,
            );
        }
    }
    assert_eq!(archived.len(), accepted.len(), "every record archived");
    assert!(lines > archived.len(), "overlapping objects: {lines} lines");
    hours.sort();
    let (first, last) = (hours.first().unwrap(), hours.last().unwrap());
    // The records were put within a minute; at a change of day the window
    // below would need two days.
    anyhow::ensure!(first.0 == last.0, "the puts spanned midnight: run again");

    // The README's statements, for this stream and its hours.
    let query = duckdb[1]
        .replace("'orders'", &format!("'{stream}'"))
        .replace("'2024-11-22'", &format!("'{}'", first.0))
        .replace(
            "BETWEEN '09' AND '11'",
            &format!("BETWEEN '{}' AND '{}'", first.1, last.1),
        );
    let sql = format!("{}\n{query}", duckdb[0]);
    let output = Command::new(&python)
        .args([
            "-c",
            "import duckdb, json, sys\n\
             rows = duckdb.sql(sys.stdin.read()).fetchall()\n\
             print(json.dumps(rows, default=lambda t: round(t.timestamp() * 1000)))",
        ])
        .current_dir(&scratch)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("a piped stdin")
                .write_all(sql.as_bytes())?;
            child.wait_with_output()
        })?;
    anyhow::ensure!(
        output.status.success(),
        "DuckDB: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Vec<Value>> = serde_json::from_slice(&output.stdout)?;

    // Every record once, in shard and numeric sequence order, with its key,
    // its arrival to the millisecond and its payload.
    let expected: Vec<Vec<Value>> = archived
        .values()
        .map(|r| {
            vec![
                Value::from(r.shard_id.clone()),
                Value::from(r.sequence_number.to_string()),
                Value::Null,
                Value::from(r.partition_key.clone()),
                Value::from(r.approximate_arrival_timestamp.epoch_millis()),
                Value::from(String::from_utf8(r.data.clone()).unwrap()),
            ]
        })
        .collect();
    assert_eq!(rows, expected);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// A fresh folder for the copied objects.
fn tempfile_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("rewind-sql-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
