//! A body whose connection drops part way, over real HTTP: a server on a
//! local socket answers the GET with the object's length and then closes
//! the connection after some of its bytes, as a reset network does.
//! https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html
//! (`Range`, `If-Match`, `206 Partial Content` with `Content-Range`).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::model::chunk::{Compression, encode};
use crate::model::record::Record;
use crate::model::record::tests::record;
use crate::sources::object::{ObjectRecords, ScanError};
use crate::store::{MemoryStore, ObjectStore, PutObject, S3Store, StoreErrorKind};

const ETAG: &str = "\"5d41402abc4b2a76b9719d911017c592\"";

/// Serves `body` under any key. Each answer gives at most the next budget's
/// bytes of what it owes (`None`: all of it), then closes the connection.
/// Keeps every request's head.
async fn server(body: Vec<u8>, budgets: Vec<Option<usize>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        let mut budgets = budgets.into_iter();
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if socket.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
            let from: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("range: bytes="))
                .map_or(0, |r| r.trim_end_matches('-').parse().unwrap());
            seen.lock().unwrap().push(head);
            let rest = &body[from..];
            let status = if from > 0 {
                format!(
                    "206 Partial Content\r\nContent-Range: bytes {from}-{}/{}",
                    body.len() - 1,
                    body.len()
                )
            } else {
                "200 OK".to_owned()
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: {ETAG}\r\nConnection: close\r\n\r\n",
                rest.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            let budget = budgets
                .next()
                .flatten()
                .unwrap_or(rest.len())
                .min(rest.len());
            socket.write_all(&rest[..budget]).await.unwrap();
            socket.flush().await.unwrap();
            // Dropped: the connection closes, mid-body when cut short.
        }
    });
    (url, heads)
}

fn store(url: &str) -> S3Store {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))
        .build();
    S3Store::new(aws_sdk_s3::Client::from_conf(config), "b")
}

fn chunk(n: usize) -> (Vec<Record>, Vec<u8>) {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            data: format!("record {i} {}", "x".repeat(i % 90)).into_bytes(),
            ..record(0, i)
        })
        .collect();
    let (bytes, _) = encode("k", &records, Compression::Gzip).unwrap();
    (records, bytes)
}

async fn read_all(store: &S3Store) -> (Vec<Record>, Option<ScanError>) {
    let mut records = ObjectRecords::open(store, "scrapes/k.jsonl.gz")
        .await
        .unwrap();
    let mut read = Vec::new();
    loop {
        match records.next().await {
            Ok(Some(record)) => read.push(record),
            Ok(None) => return (read, None),
            Err(error) => return (read, Some(error)),
        }
    }
}

#[tokio::test]
async fn a_dropped_body_goes_on_from_the_byte_where_it_broke() {
    let (input, bytes) = chunk(5000);
    let (first, second) = (bytes.len() / 3, bytes.len() / 4);
    // Cut after a third, then the rest is cut again after a quarter.
    let (url, heads) = server(bytes.clone(), vec![Some(first), Some(second), None]).await;
    let (read, error) = read_all(&store(&url)).await;
    assert!(error.is_none(), "{error:?}");
    // Every record once, in order: no byte lost, none twice.
    assert_eq!(read, input);
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(!heads[0].contains("range:"), "{}", heads[0]);
    for (head, from) in heads[1..].iter().zip([first, first + second]) {
        assert!(head.starts_with("get /b/scrapes/k.jsonl.gz"), "{head}");
        assert!(
            head.contains(&format!("range: bytes={from}-\r\n")),
            "{head}"
        );
        // Held to the same object: a replaced one would answer 412.
        assert!(head.contains(&format!("if-match: {ETAG}\r\n")), "{head}");
    }
}

#[tokio::test]
async fn a_body_that_keeps_breaking_off_is_a_retryable_error_after_its_whole_records() {
    let (input, bytes) = chunk(3000);
    // A tenth, then answers that break off before their first byte: a
    // resume that brings bytes would start the count again.
    let mut cuts = vec![Some(bytes.len() / 10)];
    cuts.extend(vec![Some(0); BODY_RESUMES as usize]);
    let (url, heads) = server(bytes.clone(), cuts).await;
    let (read, error) = read_all(&store(&url)).await;
    let Some(ScanError::Store(error)) = error else {
        panic!("{error:?}");
    };
    assert_eq!(error.kind, StoreErrorKind::Retryable);
    assert!(
        error
            .to_string()
            .starts_with("getting s3://b/scrapes/k.jsonl.gz failed: "),
        "{error}"
    );
    // What came before is the object's own, in order, each once; it ends
    // short of the whole.
    assert!(read.len() < input.len());
    assert_eq!(read, input[..read.len()]);
    // The first GET and BODY_RESUMES resumes, each from where the last
    // stopped.
    assert_eq!(heads.lock().unwrap().len(), BODY_RESUMES as usize + 1);
}

#[tokio::test]
async fn a_store_that_ignores_the_range_is_refused_rather_than_read_twice() {
    let (_, bytes) = chunk(2000);
    let cut = bytes.len() / 2;
    // This server answers a range with the whole object (200, no
    // Content-Range), as a proxy that drops the header would.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = bytes.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = [0; 4096];
            let _ = socket.read(&mut head).await.unwrap();
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: {ETAG}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            let end = if first { cut } else { body.len() };
            socket.write_all(&body[..end]).await.unwrap();
            first = false;
        }
    });
    let (_, error) = read_all(&store(&url)).await;
    let Some(ScanError::Store(error)) = error else {
        panic!("{error:?}");
    };
    assert_eq!(error.kind, StoreErrorKind::Refused, "{error}");
}

#[tokio::test]
async fn a_page_needs_only_the_first_pieces_of_a_large_object() {
    let (input, bytes) = chunk(20_000);
    let store = MemoryStore::default();
    store
        .put(PutObject {
            key: "k".into(),
            body: bytes.clone(),
            content_type: "application/x-ndjson",
            content_encoding: Some("gzip"),
        })
        .await
        .unwrap();
    let mut records = ObjectRecords::open(&store, "k").await.unwrap();
    let page = records.take(10).await.unwrap();
    assert_eq!(page, input[..10]);
    // A page of records took a feed slice or two, not the object.
    assert!(
        records.bytes_read() <= 2 * crate::model::chunk::FEED_BYTES as u64,
        "{} of {} bytes read for the first page",
        records.bytes_read(),
        bytes.len()
    );
    assert!(bytes.len() > 8 * crate::model::chunk::FEED_BYTES);
    let rest = records.take(usize::MAX).await.unwrap();
    assert_eq!(rest, input[10..]);
    assert_eq!(records.bytes_read(), bytes.len() as u64);
}
