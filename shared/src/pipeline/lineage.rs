//! Shard lineage: a split or a merge makes children that must be read after
//! their parents, so that every partition key keeps its order across a
//! reshard. Shards are ordered parents first, and grouped by lineage so that
//! unrelated groups can run in parallel.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A shard to read, with its lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedShard {
    pub shard_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_shard_ids: Vec<String>,
}

/// Orders shards so that every parent comes before its children (and keeps
/// shard-id order otherwise). Parents outside the list don't constrain it.
pub fn parents_first(shards: Vec<PlannedShard>) -> Vec<PlannedShard> {
    let ids: BTreeSet<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
    let mut pending: BTreeMap<String, PlannedShard> = shards
        .into_iter()
        .map(|s| (s.shard_id.clone(), s))
        .collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    while !pending.is_empty() {
        let ready: Vec<String> = pending
            .values()
            .filter(|s| {
                s.parent_shard_ids
                    .iter()
                    .all(|p| !ids.contains(p) || done.contains(p))
            })
            .map(|s| s.shard_id.clone())
            .collect();
        if ready.is_empty() {
            // A cycle can't come from Kinesis; keep what is left in id order
            // rather than loop.
            out.extend(std::mem::take(&mut pending).into_values());
            break;
        }
        for id in ready {
            done.insert(id.clone());
            out.extend(pending.remove(&id));
        }
    }
    out
}

/// Groups shards by lineage (connected by parent links among `shards`),
/// keeping the order of `shards` (parents first) inside each group and
/// ordering groups by their first shard.
pub fn lineage_groups(shards: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    let index: BTreeMap<&str, usize> = shards
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), i))
        .collect();
    let mut root: Vec<usize> = (0..shards.len()).collect();
    fn find(root: &mut [usize], mut i: usize) -> usize {
        while root[i] != i {
            root[i] = root[root[i]];
            i = root[i];
        }
        i
    }
    for (i, (_, parents)) in shards.iter().enumerate() {
        for parent in parents {
            if let Some(&j) = index.get(parent.as_str()) {
                let (a, b) = (find(&mut root, i), find(&mut root, j));
                root[a.max(b)] = a.min(b);
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (i, (id, _)) in shards.iter().enumerate() {
        let r = find(&mut root, i);
        groups.entry(r).or_default().push(id.clone());
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_before_children() {
        let shard = |id: &str, parents: &[&str]| PlannedShard {
            shard_id: id.into(),
            parent_shard_ids: parents.iter().map(|p| (*p).to_owned()).collect(),
        };
        // 0 split into 2 and 3; 1 and 3 merged into 4; 5 has a parent outside the list.
        let shards = vec![
            shard("shardId-4", &["shardId-1", "shardId-3"]),
            shard("shardId-3", &["shardId-0"]),
            shard("shardId-2", &["shardId-0"]),
            shard("shardId-5", &["shardId-9"]),
            shard("shardId-1", &[]),
            shard("shardId-0", &[]),
        ];
        let order: Vec<String> = parents_first(shards)
            .into_iter()
            .map(|s| s.shard_id)
            .collect();
        assert_eq!(
            order,
            [
                "shardId-0",
                "shardId-1",
                "shardId-5",
                "shardId-2",
                "shardId-3",
                "shardId-4"
            ]
        );
    }
}
