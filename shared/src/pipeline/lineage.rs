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

/// The lineage groups of the shards in `present` (those with records to
/// read), parents first, from the parent links of every shard `known` (which
/// may include shards with nothing to read). A shard's parents here are its
/// nearest ancestors in `present`, found through the ones not in it: a
/// chain whose middle shard has nothing to read still orders its ends, and
/// the children of a split whose parent has nothing to read are unrelated
/// (their hash key ranges are disjoint) and run apart.
pub fn groups_of(
    present: &BTreeSet<String>,
    known: &BTreeMap<String, Vec<String>>,
) -> Vec<Vec<String>> {
    let nearest = |shard: &String| -> Vec<String> {
        let mut found = Vec::new();
        let mut visited = BTreeSet::new();
        let mut todo: Vec<&String> = known.get(shard).into_iter().flatten().collect();
        while let Some(parent) = todo.pop() {
            if !visited.insert(parent) {
                continue;
            }
            if present.contains(parent) {
                found.push(parent.clone());
            } else {
                todo.extend(known.get(parent).into_iter().flatten());
            }
        }
        found.sort();
        found
    };
    let shards = parents_first(
        present
            .iter()
            .map(|shard| PlannedShard {
                shard_id: shard.clone(),
                parent_shard_ids: nearest(shard),
            })
            .collect(),
    );
    let links: Vec<(String, Vec<String>)> = shards
        .into_iter()
        .map(|s| (s.shard_id, s.parent_shard_ids))
        .collect();
    lineage_groups(&links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_lineage_through_shards_with_nothing_to_read() {
        let known: BTreeMap<String, Vec<String>> = [
            ("s0", vec![]),
            ("s1", vec![]),
            // s0 split into s2 and s3; s1 into s4 and s5; s3 into s6.
            ("s2", vec!["s0"]),
            ("s3", vec!["s0"]),
            ("s4", vec!["s1"]),
            ("s5", vec!["s1"]),
            ("s6", vec!["s3"]),
            // s4 and s5 merged into s7.
            ("s7", vec!["s4", "s5"]),
        ]
        .into_iter()
        .map(|(id, parents)| {
            (
                id.to_owned(),
                parents.into_iter().map(str::to_owned).collect(),
            )
        })
        .collect();
        let set = |ids: &[&str]| {
            ids.iter()
                .map(|id| (*id).to_owned())
                .collect::<BTreeSet<_>>()
        };
        // Every shard: the two lineages of the 2 → 4 reshard, parents first.
        assert_eq!(
            groups_of(
                &set(&["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"]),
                &known
            ),
            [vec!["s0", "s2", "s3", "s6"], vec!["s1", "s4", "s5", "s7"]]
        );
        // The parents have nothing to read: their children are unrelated,
        // but s0 → s3 → s6 still orders s6 after s0, and s7 after s4 and s5.
        assert_eq!(
            groups_of(&set(&["s0", "s2", "s4", "s5", "s6", "s7"]), &known),
            [vec!["s0", "s2", "s6"], vec!["s4", "s5", "s7"]]
        );
        assert_eq!(
            groups_of(&set(&["s2", "s3", "s4"]), &known),
            [vec!["s2"], vec!["s3"], vec!["s4"]]
        );
        // A shard no marker knows has no parents.
        assert_eq!(groups_of(&set(&["s9"]), &known), [vec!["s9"]]);
    }

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
