//! A Distributed Map's items in S3: the plan step writes them as one JSON
//! array, which the Map reads with `ItemReader` (`s3:getObject`, `InputType`
//! `JSON`), so no state payload grows with the shard count; the steps after
//! the Map read the same object back one item at a time.
//!
//! The array holds one item per line (`[`, then each item followed by `,`
//! but the last, then `]`): valid JSON for Step Functions, and a reader can
//! parse it line by line without building a list of every item.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::{ObjectReader, ObjectStore, PutObject, StoreError};

/// Where a plan's items are: what the Map's `ItemReader` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemsLocation {
    pub bucket: String,
    pub key: String,
}

/// The key of a run's plan items in its folder.
pub fn plan_key(run_folder: &str) -> String {
    format!("{run_folder}/_plan.json")
}

/// The items as the JSON array `ItemReader` reads, one item a line.
pub fn items_body<T: Serialize>(items: impl IntoIterator<Item = T>) -> Vec<u8> {
    let mut body = b"[".to_vec();
    for (i, item) in items.into_iter().enumerate() {
        body.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        serde_json::to_writer(&mut body, &item).expect("plan items always serialise");
    }
    body.extend_from_slice(b"\n]\n");
    body
}

/// Stores `items` at `key` of `store`.
pub async fn write_items<O: ObjectStore, T: Serialize>(
    store: &O,
    key: &str,
    items: impl IntoIterator<Item = T>,
) -> Result<(), StoreError> {
    store
        .put(PutObject {
            key: key.to_owned(),
            body: items_body(items),
            content_type: "application/json",
            content_encoding: None,
        })
        .await
}

/// Why a plan's items could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ItemsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key} line {line}: not a plan item")]
    Item {
        key: String,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// A plan's items, read from the object's bytes one line at a time: only
/// the item being handled is ever parsed.
pub struct Items<T> {
    key: String,
    bytes: Vec<u8>,
    at: usize,
    line: usize,
    _item: std::marker::PhantomData<T>,
}

impl<T: DeserializeOwned> Items<T> {
    /// Reads the items at `key` of `store`.
    pub async fn read<R: ObjectReader>(store: &R, key: &str) -> Result<Self, ItemsError> {
        Ok(Self::from_bytes(key, store.get(key).await?))
    }

    pub fn from_bytes(key: &str, bytes: Vec<u8>) -> Self {
        Self {
            key: key.to_owned(),
            bytes,
            at: 0,
            line: 0,
            _item: std::marker::PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Iterator for Items<T> {
    type Item = Result<T, ItemsError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.at < self.bytes.len() {
            let rest = &self.bytes[self.at..];
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let text = rest[..end].trim_ascii();
            self.at += end + 1;
            self.line += 1;
            let text = text.strip_suffix(b",").unwrap_or(text);
            if matches!(text, b"" | b"[" | b"]") {
                continue;
            }
            return Some(
                serde_json::from_slice(text).map_err(|source| ItemsError::Item {
                    key: self.key.clone(),
                    line: self.line,
                    source,
                }),
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_a_json_array_read_back_one_line_at_a_time() {
        let items = vec![
            vec!["a".to_owned()],
            vec!["b".to_owned(), "c,\n]".to_owned()],
        ];
        let body = items_body(&items);
        // What ItemReader (InputType JSON) takes: one JSON array.
        let parsed: Vec<Vec<String>> = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed, items);
        let read: Vec<Vec<String>> = Items::from_bytes("k", body)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, items);
        let none: Vec<u8> = items_body(Vec::<u8>::new());
        assert!(serde_json::from_slice::<Vec<u8>>(&none).unwrap().is_empty());
        assert_eq!(Items::<u8>::from_bytes("k", none).count(), 0);
    }

    #[test]
    fn a_broken_item_names_the_object_and_line() {
        let error = Items::<u32>::from_bytes("run/_plan.json", b"[\n1,\nx\n]\n".to_vec())
            .nth(1)
            .unwrap()
            .unwrap_err();
        assert_eq!(error.to_string(), "run/_plan.json line 3: not a plan item");
    }
}
