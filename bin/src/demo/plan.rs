//! The traffic plan: three phases of orders, some of them in KPL aggregates,
//! poison planted in the outage. Decided before anything runs; what the
//! stream accepted is counted elsewhere, from its answers.

use anyhow::Context as _;
use rewind_engine::model::kpl::{self, UserRecord};
use serde::Serialize;
use serde_json::json;

/// Of every ten user records of a phase, this many travel in one KPL
/// aggregate, as a producer using the KPL next to plain producers would.
const AGGREGATED_PER_TEN: usize = 4;

/// One Kinesis record to put: a plain user record or a KPL aggregate.
#[derive(Debug, Clone)]
pub(super) struct Put {
    pub(super) key: String,
    pub(super) data: Vec<u8>,
    /// User records it carries: 1, or the aggregate's count.
    pub(super) user_records: usize,
    pub(super) aggregate: bool,
    pub(super) poison: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum PhaseName {
    BeforeOutage,
    Outage,
    AfterOutage,
}

impl PhaseName {
    pub(super) fn label(self) -> &'static str {
        match self {
            PhaseName::BeforeOutage => "before",
            PhaseName::Outage => "outage",
            PhaseName::AfterOutage => "after",
        }
    }
}

#[derive(Debug)]
pub(super) struct Phase {
    pub(super) name: PhaseName,
    pub(super) puts: Vec<Put>,
    /// The stream is resharded after this many of `puts`.
    pub(super) reshard_after: Option<usize>,
}

/// Poison records planted in the outage window: a few, more for more
/// traffic.
pub(super) fn poison_count(records: usize) -> usize {
    (records / 100).clamp(2, 10)
}

const STATUSES: [&str; 4] = ["PLACED", "PAID", "PACKED", "SHIPPED"];

/// The three phases of `records` user records (orders numbered from 0
/// across phases), with `poison` of the outage's plain records planted.
pub(super) fn plan(records: usize, poison: usize) -> anyhow::Result<Vec<Phase>> {
    let before = records * 2 / 5;
    let outage = records * 3 / 10;
    let sizes = [
        (PhaseName::BeforeOutage, before),
        (PhaseName::Outage, outage),
        (PhaseName::AfterOutage, records - before - outage),
    ];
    let mut order = 0usize;
    let mut phases = Vec::new();
    for (name, size) in sizes {
        let mut puts = Vec::new();
        let mut pending: Vec<UserRecord> = Vec::new();
        for i in 0..size {
            let key = format!("customer-{}", order % 8);
            let data = json!({
                "order": order,
                "customer": key,
                "status": STATUSES[order % STATUSES.len()],
                "amountCents": 500 + (order * 137) % 20_000,
            })
            .to_string()
            .into_bytes();
            order += 1;
            if i % 10 < AGGREGATED_PER_TEN {
                pending.push(UserRecord {
                    partition_key: key,
                    explicit_hash_key: None,
                    data,
                });
                if i % 10 == AGGREGATED_PER_TEN - 1 || i + 1 == size {
                    flush(&mut pending, &mut puts)?;
                }
            } else {
                puts.push(Put {
                    key,
                    data,
                    user_records: 1,
                    aggregate: false,
                    poison: false,
                });
            }
        }
        flush(&mut pending, &mut puts)?;
        let reshard_after = (name == PhaseName::Outage).then_some(puts.len() / 2);
        if name == PhaseName::Outage {
            // Spread over the window, on both sides of the reshard.
            let plain: Vec<usize> = (0..puts.len()).filter(|&i| !puts[i].aggregate).collect();
            anyhow::ensure!(
                plain.len() >= poison,
                "{records} records leave too few plain records in the outage for {poison} poison records"
            );
            for k in 0..poison {
                let index = plain[(2 * k + 1) * plain.len() / (2 * poison)];
                let put = &mut puts[index];
                let mut data = b"POISON ".to_vec();
                data.extend_from_slice(&put.data);
                put.data = data;
                put.poison = true;
            }
        }
        phases.push(Phase {
            name,
            puts,
            reshard_after,
        });
    }
    Ok(phases)
}

/// Packs the pending user records into KPL aggregates (one user record
/// alone is put plain: the KPL does not aggregate a single record).
fn flush(pending: &mut Vec<UserRecord>, puts: &mut Vec<Put>) -> anyhow::Result<()> {
    match pending.len() {
        0 => {}
        1 => {
            let user = pending.remove(0);
            puts.push(Put {
                key: user.partition_key,
                data: user.data,
                user_records: 1,
                aggregate: false,
                poison: false,
            });
        }
        _ => {
            for aggregate in kpl::aggregate(pending.drain(..)).context("KPL aggregation")? {
                puts.push(Put {
                    key: aggregate.partition_key,
                    data: aggregate.data,
                    user_records: aggregate.user_records,
                    aggregate: true,
                    poison: false,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_splits_phases_aggregates_and_plants_poison_in_the_outage() {
        for records in [30, 60, 600, 1001] {
            let poison = poison_count(records);
            let phases = plan(records, poison).unwrap();
            let users: usize = phases
                .iter()
                .flat_map(|p| &p.puts)
                .map(|p| p.user_records)
                .sum();
            assert_eq!(users, records);
            for phase in &phases {
                let planted = phase.puts.iter().filter(|p| p.poison).count();
                let expected = if phase.name == PhaseName::Outage {
                    poison
                } else {
                    0
                };
                assert_eq!(planted, expected, "{records}: {:?}", phase.name);
                assert!(phase.puts.iter().any(|p| p.aggregate), "{records}");
                for put in &phase.puts {
                    assert_eq!(put.poison, put.data.starts_with(b"POISON"));
                    assert_eq!(put.aggregate, kpl::is_aggregated(&put.data));
                    if put.aggregate {
                        let users = kpl::deaggregate(&put.data).unwrap().unwrap();
                        assert_eq!(users.len(), put.user_records);
                        assert!(users.iter().all(|u| !u.data.starts_with(b"POISON")));
                    }
                }
            }
            // Poison on both sides of the reshard.
            let outage = &phases[1];
            let split = outage.reshard_after.unwrap();
            assert!(outage.puts[..split].iter().any(|p| p.poison));
            assert!(outage.puts[split..].iter().any(|p| p.poison));
        }
    }
}
