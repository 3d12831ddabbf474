//! Listing a page at a time: what a bounded reader needs instead of
//! [`ObjectReader::list`](super::ObjectReader::list)'s every key. One page is
//! one `ListObjectsV2` answer (at most 1,000 keys and folders), optionally
//! folded at `/` into folders and started after a key, so a reader holds
//! one page of keys whatever the prefix holds and skips what lies before
//! its position without fetching it.
//!
//! `ListObjectsV2`: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>
//! (`StartAfter` is exclusive and any key, not only one that exists;
//! `Delimiter` rolls keys up into `CommonPrefixes`; at most 1,000 entries a
//! page, keys and prefixes counted together).

use super::{Operation, S3Store, StoreError};

/// The most entries (keys and folders) one page holds, S3's own maximum.
pub const MAX_PAGE: usize = 1000;

/// One page of keys under a prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListQuery<'a> {
    pub prefix: &'a str,
    /// Fold keys at the next `/` after the prefix into folders.
    pub folders: bool,
    /// Only keys after this one (in key order).
    pub start_after: Option<&'a str>,
    /// Where the previous page ended ([`ListPage::next`]).
    pub continuation: Option<&'a str>,
    /// At most this many entries (at most [`MAX_PAGE`]).
    pub max_keys: Option<usize>,
}

/// One page of a listing, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub keys: Vec<String>,
    /// With [`ListQuery::folders`]: `<prefix><name>/` for each folder.
    pub folders: Vec<String>,
    /// The continuation of the next page; `None` on the last.
    pub next: Option<String>,
}

/// A page cut from a store's whole listing, for stores whose listing is
/// local (a folder, memory): the same entries and order S3 gives, with the
/// last entry as the continuation.
pub fn page_of(keys: Vec<String>, query: &ListQuery<'_>) -> ListPage {
    let after = match (query.start_after, query.continuation) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let limit = query.max_keys.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let mut page = ListPage::default();
    let mut last: Option<String> = None;
    for key in keys {
        if !key.starts_with(query.prefix) || after.is_some_and(|a| key.as_str() <= a) {
            continue;
        }
        let folder = query
            .folders
            .then(|| key[query.prefix.len()..].find('/'))
            .flatten()
            .map(|end| key[..query.prefix.len() + end + 1].to_owned());
        if folder.is_some() && page.folders.last() == folder.as_ref() {
            continue;
        }
        if page.keys.len() + page.folders.len() == limit {
            page.next = last.map(|l| continuation_past(&l));
            return page;
        }
        match folder {
            Some(folder) => {
                last = Some(folder.clone());
                page.folders.push(folder);
            }
            None => {
                last = Some(key.clone());
                page.keys.push(key);
            }
        }
    }
    page
}

/// A continuation after `entry`, past every key inside it when it is a
/// folder (`\u{10FFFF}` sorts after every character a key can hold).
fn continuation_past(entry: &str) -> String {
    if entry.ends_with('/') {
        format!("{entry}\u{10FFFF}")
    } else {
        entry.to_owned()
    }
}

impl S3Store {
    /// One `ListObjectsV2` request.
    pub(super) async fn list_one_page(&self, query: ListQuery<'_>) -> Result<ListPage, StoreError> {
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(query.prefix)
            .set_delimiter(query.folders.then(|| "/".to_owned()))
            .set_start_after(query.start_after.map(str::to_owned))
            .set_continuation_token(query.continuation.map(str::to_owned))
            .set_max_keys(query.max_keys.map(|n| n.clamp(1, MAX_PAGE) as i32))
            .send()
            .await
            .map_err(|error| self.error(Operation::List, &format!("{}*", query.prefix), error))?;
        Ok(ListPage {
            keys: output
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect(),
            folders: output
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_owned))
                .collect(),
            next: output
                .is_truncated()
                .unwrap_or(false)
                .then(|| output.next_continuation_token().map(str::to_owned))
                .flatten(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        [
            "a/_shards/s1.json",
            "a/h=00/s1/1-2.gz",
            "a/h=00/s1/3-4.gz",
            "a/h=00/s2/1-1.gz",
            "a/h=01/s1/5-6.gz",
            "a/top.txt",
            "b/x",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    #[test]
    fn folders_fold_at_the_next_slash() {
        let query = ListQuery {
            prefix: "a/",
            folders: true,
            ..ListQuery::default()
        };
        let page = page_of(keys(), &query);
        assert_eq!(page.folders, ["a/_shards/", "a/h=00/", "a/h=01/"]);
        assert_eq!(page.keys, ["a/top.txt"]);
        assert_eq!(page.next, None);
    }

    #[test]
    fn pages_continue_where_they_ended_and_start_after_a_key() {
        let query = ListQuery {
            prefix: "a/h=00/",
            folders: true,
            max_keys: Some(1),
            ..ListQuery::default()
        };
        let first = page_of(keys(), &query);
        assert_eq!(first.folders, ["a/h=00/s1/"]);
        let second = page_of(
            keys(),
            &ListQuery {
                continuation: first.next.as_deref(),
                ..query
            },
        );
        assert_eq!(second.folders, ["a/h=00/s2/"]);
        assert_eq!(second.next, None);

        let after = page_of(
            keys(),
            &ListQuery {
                prefix: "a/h=00/s1/",
                start_after: Some("a/h=00/s1/3"),
                ..ListQuery::default()
            },
        );
        assert_eq!(after.keys, ["a/h=00/s1/3-4.gz"]);
    }
}
