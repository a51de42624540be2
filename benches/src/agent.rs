//! The agent-memory workload: what an agent platform sends Engram, with exact ground truth.
//!
//! - **Who**: `T` tenants × `U` users per tenant. Activity is skewed: a memory (and a recall)
//!   picks its tenant by a Zipf law over the tenants and its user by a Zipf law over that
//!   tenant's users, so a few tenants and users are busy and most are quiet.
//! - **Memories**: a vector, a JSON payload of a few hundred bytes (kind, tag, session,
//!   source, channel, entities, a short summary), a text of one or two sentences, an
//!   importance, and a creation time spread over the year before [`NOW_MS`] (so the hot /
//!   warm tiers both see data once the cluster ages it).
//! - **Vectors**: dimension 50 takes the rows of a real data set (GloVe); 384, 768 and 1536 (or
//!   any other) are synthetic and clustered: unit Gaussian centres, each memory a centre plus
//!   Gaussian noise, normalised, so nearest neighbours are meaningful and not uniform noise.
//! - **Recalls**: mostly user scope (one shard), some of them filtered by a time range (the
//!   last 30 days) or a payload tag; a share are tenant scope (fan-out over the tenant's
//!   shards). Query vectors are the data set's held-out queries (GloVe) or fresh points of
//!   the same clusters (synthetic).
//! - **Ground truth**: exact. For every recall, a brute-force cosine scan over exactly the
//!   memories it may see (its tenant, its user if user scope, its filter), in parallel.

use std::collections::HashMap;

use engram_client::{v1, MemoryInput, Search};
use engram_index::dataset::Dataset;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Zipf};
use rayon::prelude::*;
use serde::Serialize;

/// The workload's "now": every creation time lies in the year before it.
pub const NOW_MS: i64 = 1_796_083_200_000; // 2026-12-01T00:00:00Z
const DAY_MS: i64 = 86_400_000;

/// The collection every tenant writes to.
pub const COLLECTION: &str = "memories";

const KINDS: [&str; 6] = ["preference", "fact", "event", "task", "conversation", "feedback"];
const SOURCES: [&str; 4] = ["chat", "email", "calendar", "tool"];
const CHANNELS: [&str; 4] = ["web", "mobile", "slack", "voice"];
/// Payload tags a recall may filter on.
pub const TAGS: usize = 16;
const WORDS: [&str; 24] = [
    "meeting", "travel", "budget", "family", "project", "deadline", "invoice", "recipe",
    "doctor", "flight", "hotel", "birthday", "gift", "report", "launch", "review", "contract",
    "garden", "training", "music", "book", "school", "coffee", "weekend",
];

#[derive(Debug, Clone, Serialize)]
pub struct AgentSpec {
    pub tenants: usize,
    /// Users per tenant.
    pub users: usize,
    /// Memories in all (capped by the data set's rows when it provides the vectors).
    pub memories: usize,
    pub queries: usize,
    pub dim: usize,
    /// Zipf exponent of tenant and user activity.
    pub zipf: f64,
    /// Share of recalls over the whole tenant (fan-out); the rest are user scope.
    pub tenant_share: f64,
    /// Share of user recalls restricted to the last 30 days.
    pub time_filter_share: f64,
    /// Share of user recalls restricted to one payload tag.
    pub tag_filter_share: f64,
    pub k: usize,
    pub seed: u64,
    /// Synthetic vectors: clusters.
    pub clusters: usize,
}

impl Default for AgentSpec {
    fn default() -> Self {
        AgentSpec {
            tenants: 10,
            users: 100,
            memories: 100_000,
            queries: 2_000,
            dim: 384,
            zipf: 1.1,
            tenant_share: 0.1,
            time_filter_share: 0.2,
            tag_filter_share: 0.2,
            k: 10,
            seed: 42,
            clusters: 256,
        }
    }
}

/// One memory (its vector is row `row` of [`AgentData::vectors`]).
#[derive(Debug, Clone)]
pub struct AgentMemory {
    pub tenant: u32,
    pub user: u32,
    pub created_ms: i64,
    pub tag: u8,
    pub kind: u8,
    pub importance: f32,
}

/// What a recall may see besides its scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecallFilter {
    pub tag: Option<u8>,
    pub created_after_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecallKind {
    User,
    UserTimeRange,
    UserTag,
    Tenant,
}

impl RecallKind {
    pub fn name(self) -> &'static str {
        match self {
            RecallKind::User => "user",
            RecallKind::UserTimeRange => "user+time",
            RecallKind::UserTag => "user+tag",
            RecallKind::Tenant => "tenant",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentQuery {
    pub tenant: u32,
    pub user: Option<u32>,
    pub kind: RecallKind,
    pub filter: RecallFilter,
    pub vector: Vec<f32>,
    /// The exact top-k memory rows (fewer when fewer memories match).
    pub truth: Vec<u32>,
}

pub struct AgentData {
    pub spec: AgentSpec,
    /// Where the vectors came from: a data set's name or `synthetic-<dim>`.
    pub source: String,
    pub dim: usize,
    pub memories: Vec<AgentMemory>,
    /// Row-major `memories.len() × dim`, unit length.
    pub vectors: Vec<f32>,
    pub queries: Vec<AgentQuery>,
}

pub fn tenant_name(t: u32) -> String {
    format!("agent-{t}")
}

pub fn user_name(u: u32) -> String {
    format!("user-{u}")
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Ranks 0..n by a Zipf law (rank 0 the busiest).
struct Skew(Zipf<f64>);

impl Skew {
    fn new(n: usize, s: f64) -> Result<Self, String> {
        Zipf::new(n.max(1) as f64, s.max(0.0))
            .map(Skew)
            .map_err(|e| format!("zipf({n}, {s}): {e}"))
    }
    fn draw(&self, rng: &mut StdRng) -> u32 {
        (self.0.sample(rng) as u32).saturating_sub(1)
    }
}

impl AgentData {
    /// Generates the workload. `dataset` provides the vectors when its dimension is
    /// `spec.dim` (its base rows for memories, its queries for recalls); otherwise they are
    /// synthetic.
    pub fn generate(spec: AgentSpec, dataset: Option<&Dataset>) -> Result<Self, String> {
        if spec.tenants == 0 || spec.users == 0 || spec.dim == 0 || spec.k == 0 {
            return Err("tenants, users, dim and k must be at least 1".into());
        }
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let ds = dataset.filter(|d| d.dim == spec.dim);
        let n = match ds {
            Some(d) => spec.memories.min(d.base.len()),
            None => spec.memories,
        };
        let dim = spec.dim;
        let (vectors, query_vectors, source) = match ds {
            Some(d) => {
                let mut v = Vec::with_capacity(n * dim);
                for row in d.base.iter().take(n) {
                    let mut r = row.clone();
                    normalise(&mut r);
                    v.extend_from_slice(&r);
                }
                let q: Vec<Vec<f32>> = (0..spec.queries)
                    .map(|j| {
                        let mut r = d.queries[j % d.queries.len()].clone();
                        normalise(&mut r);
                        r
                    })
                    .collect();
                (v, q, d.name.clone())
            }
            None => {
                let (v, q) = synthetic(n, spec.queries, dim, spec.clusters, &mut rng)?;
                (v, q, format!("synthetic-{dim}"))
            }
        };
        let tenant_skew = Skew::new(spec.tenants, spec.zipf)?;
        let user_skew = Skew::new(spec.users, spec.zipf)?;
        let memories: Vec<AgentMemory> = (0..n)
            .map(|i| {
                // Creation times grow with the row (an append-mostly log of a year), jittered.
                let age_days = 365.0 * (1.0 - (i as f64 + rng.random::<f64>()) / n as f64);
                AgentMemory {
                    tenant: tenant_skew.draw(&mut rng),
                    user: user_skew.draw(&mut rng),
                    created_ms: NOW_MS - (age_days * DAY_MS as f64) as i64,
                    tag: rng.random_range(0..TAGS as u8),
                    kind: rng.random_range(0..KINDS.len() as u8),
                    importance: (rng.random::<f32>() * 100.0).round() / 100.0,
                }
            })
            .collect();

        // Index the memories by (tenant, user) and by tenant, for the ground truth.
        let mut by_user: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
        let mut by_tenant: HashMap<u32, Vec<u32>> = HashMap::new();
        for (i, m) in memories.iter().enumerate() {
            by_user.entry((m.tenant, m.user)).or_default().push(i as u32);
            by_tenant.entry(m.tenant).or_default().push(i as u32);
        }
        // Recalls come from active users: draw a memory's (tenant, user) uniformly, which
        // follows the same skew, and re-draw the rare empty tenant.
        let mut queries = Vec::with_capacity(spec.queries);
        for vector in query_vectors {
            let m = &memories[rng.random_range(0..n.max(1))];
            let roll: f64 = rng.random();
            let (kind, user, filter) = if roll < spec.tenant_share {
                (RecallKind::Tenant, None, RecallFilter::default())
            } else if roll < spec.tenant_share + spec.time_filter_share {
                (
                    RecallKind::UserTimeRange,
                    Some(m.user),
                    RecallFilter {
                        tag: None,
                        created_after_ms: Some(NOW_MS - 30 * DAY_MS),
                    },
                )
            } else if roll < spec.tenant_share + spec.time_filter_share + spec.tag_filter_share {
                (
                    RecallKind::UserTag,
                    Some(m.user),
                    RecallFilter {
                        tag: Some(m.tag),
                        created_after_ms: None,
                    },
                )
            } else {
                (RecallKind::User, Some(m.user), RecallFilter::default())
            };
            queries.push(AgentQuery {
                tenant: m.tenant,
                user,
                kind,
                filter,
                vector,
                truth: Vec::new(),
            });
        }
        let empty = Vec::new();
        let truths: Vec<Vec<u32>> = queries
            .par_iter()
            .map(|q| {
                let pool = match q.user {
                    Some(u) => by_user.get(&(q.tenant, u)).unwrap_or(&empty),
                    None => by_tenant.get(&q.tenant).unwrap_or(&empty),
                };
                let mut scored: Vec<(f32, u32)> = pool
                    .iter()
                    .filter(|&&i| matches(&memories[i as usize], &q.filter))
                    .map(|&i| {
                        let row = &vectors[i as usize * dim..(i as usize + 1) * dim];
                        (dot(row, &q.vector), i)
                    })
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                scored.into_iter().take(spec.k).map(|(_, i)| i).collect()
            })
            .collect();
        for (q, t) in queries.iter_mut().zip(truths) {
            q.truth = t;
        }
        Ok(AgentData {
            spec,
            source,
            dim,
            memories,
            vectors,
            queries,
        })
    }

    pub fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dim..(row + 1) * self.dim]
    }

    /// The memory of `row` as the SDK writes it: id = row number, user, vector, payload,
    /// text, creation time, importance.
    pub fn input(&self, row: usize) -> MemoryInput {
        let m = &self.memories[row];
        MemoryInput::new(row.to_string(), user_name(m.user), self.vector(row).to_vec())
            .payload(payload(row, m))
            .text(text(row, m))
            .created_at_ms(m.created_ms)
            .importance(m.importance)
    }

    /// The SDK request of recall `j` (strong reads; `ef` 0 = the collection's default).
    pub fn search(&self, j: usize, ef: u32) -> (String, Search) {
        let q = &self.queries[j];
        let k = self.spec.k as u32;
        let mut s = match q.user {
            Some(u) => Search::user(user_name(u), q.vector.clone(), k),
            None => Search::tenant(q.vector.clone(), k),
        };
        if ef > 0 {
            s = s.ef(ef);
        }
        if let Some(tag) = q.filter.tag {
            s = s.where_eq("tag", serde_json::json!(tag_name(tag)));
        }
        if let Some(after) = q.filter.created_after_ms {
            s = s.created_between(Some(after), None);
        }
        (tenant_name(q.tenant), s)
    }

    /// Recall of a search answer against recall `j`'s ground truth (1.0 when nothing could
    /// match and nothing was returned).
    pub fn recall(&self, j: usize, hits: &[v1::ScoredMemory]) -> f64 {
        let want = &self.queries[j].truth;
        if want.is_empty() {
            return if hits.is_empty() { 1.0 } else { 0.0 };
        }
        let got = hits
            .iter()
            .filter_map(|h| h.memory.as_ref()?.id.parse::<u32>().ok())
            .take(self.spec.k)
            .filter(|i| want.contains(i))
            .count();
        got as f64 / want.len() as f64
    }

    /// Average payload + text bytes per memory (what a write carries besides its vector).
    pub fn mean_payload_bytes(&self) -> f64 {
        let sample = self.memories.len().min(1000);
        if sample == 0 {
            return 0.0;
        }
        let total: usize = (0..sample)
            .map(|i| {
                let m = &self.memories[i];
                payload(i, m).to_string().len() + text(i, m).len()
            })
            .sum();
        total as f64 / sample as f64
    }

    /// How many memories each tenant holds, busiest first (the skew, for the report).
    pub fn tenant_sizes(&self) -> Vec<usize> {
        let mut v = vec![0usize; self.spec.tenants];
        for m in &self.memories {
            v[m.tenant as usize] += 1;
        }
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    }
}

fn matches(m: &AgentMemory, f: &RecallFilter) -> bool {
    f.tag.is_none_or(|t| t == m.tag) && f.created_after_ms.is_none_or(|a| m.created_ms >= a)
}

pub fn tag_name(tag: u8) -> String {
    format!("tag-{tag:02}")
}

/// A few hundred bytes of JSON, deterministic per row.
fn payload(row: usize, m: &AgentMemory) -> serde_json::Value {
    let w = |k: usize| WORDS[(row.wrapping_mul(31).wrapping_add(k * 7)) % WORDS.len()];
    serde_json::json!({
        "kind": KINDS[m.kind as usize],
        "tag": tag_name(m.tag),
        "session": format!("s-{:08x}", (row as u64).wrapping_mul(0x9e37_79b9) as u32),
        "source": SOURCES[row % SOURCES.len()],
        "channel": CHANNELS[(row / 3) % CHANNELS.len()],
        "turn": row % 50,
        "entities": [w(1), w(2), w(3)],
        "summary": format!("The user mentioned the {} and the {} while planning the {}.", w(4), w(5), w(6)),
        "confidence": (m.importance * 0.9 + 0.1),
        "schema": "agent-memory/v1",
    })
}

fn text(row: usize, m: &AgentMemory) -> String {
    let w = |k: usize| WORDS[(row.wrapping_mul(17).wrapping_add(k * 5)) % WORDS.len()];
    format!(
        "{} about the {} ({}): remember that the {} matters for the {} next week.",
        KINDS[m.kind as usize],
        w(1),
        w(2),
        w(3),
        w(4)
    )
}

/// `n` memories and `nq` queries of `clusters` Gaussian clusters in `dim` dimensions.
fn synthetic(
    n: usize,
    nq: usize,
    dim: usize,
    clusters: usize,
    rng: &mut StdRng,
) -> Result<(Vec<f32>, Vec<Vec<f32>>), String> {
    let unit = Normal::new(0.0f32, 1.0).map_err(|e| e.to_string())?;
    // Noise of norm ~0.7 against unit centres: clusters overlap, neighbours stay meaningful.
    let noise = Normal::new(0.0f32, 0.7 / (dim as f32).sqrt()).map_err(|e| e.to_string())?;
    let c = clusters.max(1);
    let centres: Vec<Vec<f32>> = (0..c)
        .map(|_| {
            let mut v: Vec<f32> = (0..dim).map(|_| unit.sample(rng)).collect();
            normalise(&mut v);
            v
        })
        .collect();
    // Cluster sizes are skewed too (some topics are common).
    let pick = Skew::new(c, 0.8)?;
    let seeds: Vec<(u32, u64)> = (0..n + nq).map(|_| (pick.draw(rng), rng.random())).collect();
    let points: Vec<Vec<f32>> = seeds
        .par_iter()
        .map(|&(ci, seed)| {
            let mut r = StdRng::seed_from_u64(seed);
            let mut v: Vec<f32> = centres[ci as usize]
                .iter()
                .map(|x| x + noise.sample(&mut r))
                .collect();
            normalise(&mut v);
            v
        })
        .collect();
    let mut flat = Vec::with_capacity(n * dim);
    for p in &points[..n] {
        flat.extend_from_slice(p);
    }
    Ok((flat, points[n..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(dim: usize) -> AgentData {
        AgentData::generate(
            AgentSpec {
                tenants: 5,
                users: 20,
                memories: 3000,
                queries: 200,
                dim,
                clusters: 16,
                ..AgentSpec::default()
            },
            None,
        )
        .expect("generate")
    }

    #[test]
    fn activity_is_skewed_and_deterministic() {
        let a = small(32);
        let sizes = a.tenant_sizes();
        assert_eq!(sizes.iter().sum::<usize>(), 3000);
        // Zipf(1.1) over 5 tenants: the busiest holds several times the quietest.
        assert!(sizes[0] > 3 * sizes[4], "{sizes:?}");
        let b = small(32);
        assert_eq!(a.vectors, b.vectors);
        assert_eq!(a.queries[7].truth, b.queries[7].truth);
    }

    #[test]
    fn ground_truth_respects_scope_and_filters() {
        let a = small(32);
        let mut kinds = std::collections::HashSet::new();
        for q in &a.queries {
            kinds.insert(q.kind);
            for &row in &q.truth {
                let m = &a.memories[row as usize];
                assert_eq!(m.tenant, q.tenant);
                if let Some(u) = q.user {
                    assert_eq!(m.user, u);
                }
                assert!(matches(m, &q.filter));
            }
            // Sorted by similarity, best first.
            let s: Vec<f32> = q.truth.iter().map(|&r| dot(a.vector(r as usize), &q.vector)).collect();
            assert!(s.windows(2).all(|w| w[0] >= w[1]), "{s:?}");
        }
        assert_eq!(kinds.len(), 4, "every recall kind is generated: {kinds:?}");
    }

    #[test]
    fn payloads_are_a_few_hundred_bytes_of_json_objects() {
        let a = small(8);
        let bytes = a.mean_payload_bytes();
        assert!((200.0..800.0).contains(&bytes), "{bytes}");
        let m = a.input(3).0;
        let v: serde_json::Value = serde_json::from_str(&m.payload_json).expect("json");
        assert!(v.is_object() && v["tag"].is_string());
        assert_eq!(m.vector.len(), 8);
        assert!(m.created_at_ms < NOW_MS && m.created_at_ms > NOW_MS - 366 * DAY_MS);
    }

    #[test]
    fn synthetic_vectors_are_clustered() {
        // Nearest neighbours are much closer than random pairs.
        let a = small(64);
        let q = &a.queries[0];
        let nearest = (0..a.memories.len())
            .map(|i| dot(a.vector(i), &q.vector))
            .fold(f32::MIN, f32::max);
        let mean = (0..a.memories.len())
            .map(|i| dot(a.vector(i), &q.vector))
            .sum::<f32>()
            / a.memories.len() as f32;
        assert!(nearest > 0.5 && mean < 0.2, "nearest {nearest}, mean {mean}");
    }
}
