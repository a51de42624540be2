//! Tenant sharding: which shards hold a tenant, and which of them holds a user.
//!
//! Rendezvous (highest-random-weight) hashing over an explicitly specified hash, XXH3-64
//! (`xxhash-rust`): every router, on every build and platform, computes the same placement,
//! and adding a shard to a set moves only the keys the new shard wins (≈ 1/(n+1) of them).
//! See docs/adr/0005-tenant-sharding.md for why not the `consistent_hash` crate.

use engram_raft::GroupId;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seeds separate the two uses so a tenant's user placement is independent of its spread.
const TENANT_SEED: u64 = 0x656e_6772_616d_0001;
const USER_SEED: u64 = 0x656e_6772_616d_0002;

fn weight(seed: u64, key: &[u8], shard: GroupId) -> u64 {
    let mut buf = Vec::with_capacity(key.len() + 8);
    buf.extend_from_slice(key);
    buf.extend_from_slice(&shard.to_be_bytes());
    xxh3_64_with_seed(&buf, seed)
}

/// The `n` shards of `candidates` with the highest weight for `key`, best first.
fn top(seed: u64, key: &[u8], candidates: &[GroupId], n: usize) -> Vec<GroupId> {
    let mut scored: Vec<(u64, GroupId)> = candidates
        .iter()
        .map(|&s| (weight(seed, key, s), s))
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.into_iter().take(n).map(|(_, s)| s).collect()
}

/// The pool shards a tenant's users are spread over (`spread` of them, or all if fewer).
pub fn tenant_shards(tenant: &str, pool: &[GroupId], spread: usize) -> Vec<GroupId> {
    let mut s = top(TENANT_SEED, tenant.as_bytes(), pool, spread.max(1));
    s.sort_unstable();
    s
}

/// The shard holding `(tenant, user)` among the collection's shards.
pub fn shard_for_user(tenant: &str, user: &str, shards: &[GroupId]) -> Option<GroupId> {
    // Length-prefixed so ("ab", "c") and ("a", "bc") are different keys.
    let mut key = Vec::with_capacity(tenant.len() + user.len() + 8);
    key.extend_from_slice(&(tenant.len() as u64).to_be_bytes());
    key.extend_from_slice(tenant.as_bytes());
    key.extend_from_slice(user.as_bytes());
    top(USER_SEED, &key, shards, 1).first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_pinned() {
        // These values are the contract between router versions: a change here moves users'
        // data to shards that do not hold it. Never update them without a migration.
        let shards: Vec<GroupId> = (1..=8).collect();
        let got: Vec<GroupId> = (0..6)
            .map(|u| shard_for_user("acme", &format!("user-{u}"), &shards).unwrap_or(0))
            .collect();
        assert_eq!(got, vec![3, 3, 5, 7, 5, 4]);
        assert_eq!(tenant_shards("acme", &shards, 3), vec![1, 2, 5]);
        assert_eq!(tenant_shards("acme", &shards[..2], 3), vec![1, 2]);
        assert_eq!(shard_for_user("acme", "u", &[]), None);
    }

    #[test]
    fn users_spread_evenly() {
        let shards: Vec<GroupId> = (1..=8).collect();
        let mut counts = std::collections::BTreeMap::new();
        for u in 0..8000 {
            let s = shard_for_user("t", &format!("u{u}"), &shards).unwrap_or(0);
            *counts.entry(s).or_insert(0usize) += 1;
        }
        assert_eq!(counts.len(), 8);
        for (&s, &c) in &counts {
            assert!((800..1200).contains(&c), "shard {s} got {c} of 8000 users");
        }
    }

    #[test]
    fn adding_a_shard_moves_only_what_it_wins() {
        let before: Vec<GroupId> = (1..=8).collect();
        let after: Vec<GroupId> = (1..=9).collect();
        let n = 20_000;
        let mut moved = 0;
        for u in 0..n {
            let user = format!("user-{u}");
            let a = shard_for_user("t", &user, &before);
            let b = shard_for_user("t", &user, &after);
            if a != b {
                // A key only ever moves to the new shard, never between old ones.
                assert_eq!(b, Some(9));
                moved += 1;
            }
        }
        let frac = moved as f64 / n as f64;
        assert!(
            (0.08..0.15).contains(&frac),
            "moved {frac:.3}, expected ≈ 1/9"
        );
    }

    #[test]
    fn tenant_spread_is_stable_when_the_pool_grows() {
        let pool: Vec<GroupId> = (1..=12).collect();
        let bigger: Vec<GroupId> = (1..=13).collect();
        let mut changed = 0;
        for t in 0..2000 {
            let tenant = format!("tenant-{t}");
            let a = tenant_shards(&tenant, &pool, 3);
            let b = tenant_shards(&tenant, &bigger, 3);
            if a != b {
                assert!(b.contains(&13));
                changed += 1;
            }
        }
        // A tenant's set changes only when shard 13 enters its top 3: ≈ 3/13.
        assert!(
            changed < 2000 * 30 / 100,
            "{changed} of 2000 tenants changed"
        );
    }
}
