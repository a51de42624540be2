//! `BruteForce`: the exact reference implementation of [`VectorIndex`], used as the oracle by
//! the conformance suite and the property tests. Linear scan; correct by construction.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::IndexConfig;
use crate::distance::{prepare, DistanceFn};
use crate::error::Result;
use crate::filter::Filter;
use crate::topk::TopK;
use crate::traits::VectorIndex;
use crate::types::{Hit, Memory, MemoryMeta, SearchRequest, Tier};

type Rows = HashMap<String, (Arc<MemoryMeta>, Vec<f32>)>;

pub struct BruteForce {
    config: IndexConfig,
    dist: DistanceFn,
    rows: RwLock<Rows>,
}

impl BruteForce {
    pub fn new(config: IndexConfig) -> Result<Self> {
        config.validate()?;
        let dist = DistanceFn::new(config.metric);
        Ok(BruteForce {
            config,
            dist,
            rows: RwLock::new(HashMap::new()),
        })
    }
}

impl VectorIndex for BruteForce {
    fn config(&self) -> &IndexConfig {
        &self.config
    }

    fn upsert_batch(&self, memories: Vec<Memory>) -> Result<()> {
        memories
            .iter()
            .try_for_each(|m| self.config.validate_memory(m))?;
        let mut rows = self.rows.write();
        for m in memories {
            let v = prepare(self.config.metric, m.vector);
            rows.insert(m.meta.id.clone(), (Arc::new(m.meta), v));
        }
        Ok(())
    }

    fn delete(&self, id: &str) -> Result<bool> {
        Ok(self.rows.write().remove(id).is_some())
    }

    fn delete_by_filter(&self, filter: &Filter) -> Result<usize> {
        filter.validate()?;
        let mut rows = self.rows.write();
        let before = rows.len();
        rows.retain(|_, (meta, _)| !filter.matches(meta));
        Ok(before - rows.len())
    }

    fn get(&self, id: &str) -> Result<Option<Memory>> {
        Ok(self.rows.read().get(id).map(|(meta, v)| Memory {
            meta: (**meta).clone(),
            vector: v.clone(),
        }))
    }

    fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>> {
        self.config.validate_search(req)?;
        let q = prepare(self.config.metric, req.vector.clone());
        let rows = self.rows.read();
        let all: Vec<&(Arc<MemoryMeta>, Vec<f32>)> = rows.values().collect();
        let mut top = TopK::new(req.k);
        for (i, (meta, v)) in all.iter().enumerate() {
            if req.filter.matches(meta) {
                top.push(self.dist.distance(&q, v), i as u32);
            }
        }
        Ok(top
            .into_sorted()
            .into_iter()
            .map(|c| Hit {
                meta: all[c.row as usize].0.clone(),
                score: self.dist.score(c.dist),
                tier: Tier::Hot,
            })
            .collect())
    }

    fn len(&self) -> usize {
        self.rows.read().len()
    }
}
