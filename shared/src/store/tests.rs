use super::*;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_smithy_mocks::{RuleMode, mock, mock_client};

fn object() -> PutObject {
    PutObject {
        key: "archive/k.jsonl.gz".into(),
        body: b"body".to_vec(),
        content_type: "application/x-ndjson",
        content_encoding: Some("gzip"),
    }
}

#[tokio::test]
async fn throttled_puts_are_retried_by_the_client() {
    let rule = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|req| {
            req.bucket() == Some("b")
                && req.key() == Some("archive/k.jsonl.gz")
                && req.content_encoding() == Some("gzip")
                && req.content_type() == Some("application/x-ndjson")
        })
        .sequence()
        .http_status(503, Some("<Error><Code>SlowDown</Code></Error>".into()))
        .times(2)
        .output(|| PutObjectOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule], |c| c
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3)
        ));
    S3Store::new(client, "b").put(object()).await.unwrap();
    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test]
async fn exhausted_retries_are_an_error_naming_the_object() {
    let rule = mock!(aws_sdk_s3::Client::put_object)
        .sequence()
        .http_status(503, Some("<Error><Code>SlowDown</Code></Error>".into()))
        .times(3)
        .build();
    let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule], |c| c
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3)
        ));
    let err = S3Store::new(client, "b").put(object()).await.unwrap_err();
    assert_eq!(rule.num_calls(), 3);
    assert!(
        err.to_string()
            .starts_with("putting s3://b/archive/k.jsonl.gz failed: "),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_object_is_told_from_a_failed_read() {
    let rule = mock!(aws_sdk_s3::Client::get_object)
        .sequence()
        .http_status(
            404,
            Some("<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>".into()),
        )
        .http_status(
            403,
            Some("<Error><Code>AccessDenied</Code><Message>no</Message></Error>".into()),
        )
        .build();
    let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule], |c| c
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
    let store = S3Store::new(client, "b");
    let missing = store.get("missing").await.unwrap_err();
    assert!(missing.is_not_found());
    assert_eq!(
        missing.to_string(),
        "getting s3://b/missing failed: no such object"
    );
    let typed = std::error::Error::source(&missing)
        .and_then(|e| e.downcast_ref::<SdkError<GetObjectError, HttpResponse>>())
        .and_then(SdkError::as_service_error);
    assert!(typed.is_some_and(GetObjectError::is_no_such_key));
    assert!(!store.get("denied").await.unwrap_err().is_not_found());
    let dir = DirStore::new(std::env::temp_dir().join("rewind-no-such-folder"));
    let missing = dir.get("missing").await.unwrap_err();
    assert!(missing.is_not_found());
    assert!(missing.to_string().starts_with("getting "), "{missing}");
    let io = std::error::Error::source(&missing).and_then(|e| e.downcast_ref::<std::io::Error>());
    assert_eq!(
        io.map(std::io::Error::kind),
        Some(std::io::ErrorKind::NotFound)
    );
}

#[tokio::test]
async fn a_throttled_put_keeps_the_sdk_error_as_its_source() {
    use aws_sdk_s3::operation::put_object::PutObjectError;
    let rule = mock!(aws_sdk_s3::Client::put_object)
        .sequence()
        .http_status(
            503,
            Some(
                "<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
                    .into(),
            ),
        )
        .build();
    let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule], |c| c
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
    let err = S3Store::new(client, "b").put(object()).await.unwrap_err();
    assert_eq!(
        (err.operation, err.kind),
        (Operation::Put, StoreErrorKind::Throttled)
    );
    let source = std::error::Error::source(&err).expect("the SDK error");
    let sdk = source
        .downcast_ref::<SdkError<PutObjectError, HttpResponse>>()
        .expect("the SDK's own error");
    assert_eq!(sdk.code(), Some("SlowDown"));
    // The message is the store's; the SDK's text is only in the source.
    assert!(
        !err.to_string().contains("Reduce your request rate"),
        "{err}"
    );
}

#[tokio::test]
async fn failures_name_the_operation_and_how_to_act() {
    let rule = mock!(aws_sdk_s3::Client::list_objects_v2)
        .sequence()
        .http_status(
            500,
            Some("<Error><Code>InternalError</Code></Error>".into()),
        )
        .http_status(403, Some("<Error><Code>AccessDenied</Code></Error>".into()))
        .build();
    let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule], |c| c
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
    let store = S3Store::new(client, "b");
    let err = store.list("run/").await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Retryable);
    assert!(
        err.to_string()
            .starts_with("listing s3://b/run/* failed: a server or network error"),
        "{err}"
    );
    let err = store.list("run/").await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Refused);
    assert!(err.source.is_some());
}

#[tokio::test]
async fn a_folder_works_as_a_store() {
    let root = std::env::temp_dir().join(format!("rewind-dirstore-{}", std::process::id()));
    let store = DirStore::new(&root);
    for key in [
        "run/shard-1/0-1-2.jsonl.gz",
        "run/shard-1/1-3-4.jsonl.gz",
        "run/shard-2/0-1-1.jsonl.gz",
        "runner/x",
    ] {
        store
            .put(PutObject {
                key: key.into(),
                body: key.as_bytes().to_vec(),
                content_type: "x",
                content_encoding: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store.list("run/shard-1/").await.unwrap(),
        ["run/shard-1/0-1-2.jsonl.gz", "run/shard-1/1-3-4.jsonl.gz"]
    );
    assert_eq!(
        store.list("run/shard-1/1-").await.unwrap(),
        ["run/shard-1/1-3-4.jsonl.gz"]
    );
    assert_eq!(store.list("run/").await.unwrap().len(), 3);
    assert_eq!(store.get("runner/x").await.unwrap(), b"runner/x");
    store.delete("run/shard-1/0-1-2.jsonl.gz").await.unwrap();
    store.delete("run/shard-1/0-1-2.jsonl.gz").await.unwrap();
    assert_eq!(store.list("run/shard-1/").await.unwrap().len(), 1);
    assert!(
        store
            .get("nope")
            .await
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
    assert!(store.list("missing/").await.unwrap().is_empty());
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn a_folder_and_memory_give_bodies_in_pieces_never_whole() {
    let root = std::env::temp_dir().join(format!("rewind-dirbody-{}", std::process::id()));
    let dir = DirStore::new(&root);
    let memory = MemoryStore::default();
    let body: Vec<u8> = (0..3 * FILE_PIECE_BYTES + 17).map(|i| i as u8).collect();
    let object = PutObject {
        key: "run/shard-1/big.jsonl.gz".into(),
        body: body.clone(),
        content_type: "x",
        content_encoding: None,
    };
    dir.put(object.clone()).await.unwrap();
    memory.put(object).await.unwrap();
    let mut bodies = vec![
        (
            dir.get_body("run/shard-1/big.jsonl.gz").await.unwrap(),
            FILE_PIECE_BYTES,
        ),
        (
            memory.get_body("run/shard-1/big.jsonl.gz").await.unwrap(),
            MEMORY_PIECE_BYTES,
        ),
    ];
    for (body_read, most) in &mut bodies {
        let mut read = Vec::new();
        let mut pieces = 0;
        while let Some(piece) = body_read.next().await.unwrap() {
            assert!(!piece.is_empty() && piece.len() <= *most);
            read.extend_from_slice(&piece);
            pieces += 1;
        }
        assert_eq!(read, body);
        assert!(pieces > 3, "{pieces}");
        assert_eq!(body_read.bytes_given(), body.len() as u64);
    }
    let missing = dir.get_body("run/nope").await.err().unwrap();
    assert!(missing.is_not_found(), "{missing}");
    std::fs::remove_dir_all(&root).unwrap();
}
