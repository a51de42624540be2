//! Engram's async Rust SDK.
//!
//! ```no_run
//! # async fn demo() -> Result<(), engram_client::Error> {
//! use engram_client::{Client, MemoryInput, Search};
//! let client = Client::connect(["http://127.0.0.1:7101"]).await?;
//! client.create_collection("acme", "memories", 64).await?;
//! let v = engram_client::toy_embed("likes green tea", 64);
//! client
//!     .upsert("acme", "memories", MemoryInput::new("m1", "alice", v.clone()).text("likes green tea"))
//!     .await?;
//! let hits = client.search("acme", "memories", Search::user("alice", v, 5)).await?;
//! # Ok(()) }
//! ```
//!
//! Every write carries an idempotency key (generated when the caller gives none) so the
//! client's own retries never write twice. Retryable errors (leader changes, unreachable
//! shards, deadlines) are retried with exponential backoff across the given endpoints until
//! the call's timeout; everything else is returned at once as a typed [`Error`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use engram_api::v1;
use engram_api::v1::engram_client::EngramClient;
pub use engram_api::{ApiError, ErrorCode};
use tonic::transport::{Channel, Endpoint};

/// A typed client error: Engram's stable code and a message naming the problem.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// Structured details (offending field, shard, leader hint).
    pub metadata: std::collections::HashMap<String, String>,
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }

    fn from_status(s: &tonic::Status) -> Self {
        let e = ApiError::from_status(s);
        Error {
            code: e.code,
            message: e.message,
            metadata: e.metadata,
        }
    }

    fn config(message: impl Into<String>) -> Self {
        Error {
            code: ErrorCode::InvalidArgument,
            message: message.into(),
            metadata: Default::default(),
        }
    }
}

/// Client behaviour.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Deadline of one call, retries included.
    pub timeout: Duration,
    /// First retry pause; doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts per call (the first included).
    pub max_attempts: u32,
    /// Longest single attempt against one node before trying the next (writes carry an
    /// idempotency key, so a retry never writes twice).
    pub attempt_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(20),
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            max_attempts: 8,
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// A memory to write.
#[derive(Debug, Clone)]
pub struct MemoryInput(pub v1::Memory);

impl MemoryInput {
    pub fn new(id: impl Into<String>, user: impl Into<String>, vector: Vec<f32>) -> Self {
        MemoryInput(v1::Memory {
            id: id.into(),
            user: user.into(),
            vector,
            ..Default::default()
        })
    }

    /// A JSON object.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.0.payload_json = payload.to_string();
        self
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.0.text = Some(text.into());
        self
    }

    pub fn importance(mut self, importance: f32) -> Self {
        self.0.importance = importance;
        self
    }

    pub fn created_at_ms(mut self, ms: i64) -> Self {
        self.0.created_at_ms = ms;
        self
    }
}

/// A recall query.
#[derive(Debug, Clone)]
pub struct Search(pub v1::SearchRequest);

impl Search {
    /// The top `k` memories of one user.
    pub fn user(user: impl Into<String>, vector: Vec<f32>, k: u32) -> Self {
        Search(v1::SearchRequest {
            vector,
            k,
            scope: Some(v1::Scope {
                scope: Some(v1::scope::Scope::User(user.into())),
            }),
            include_payload: true,
            ..Default::default()
        })
    }

    /// The top `k` memories across every user of the tenant (fan-out over its shards).
    pub fn tenant(vector: Vec<f32>, k: u32) -> Self {
        Search(v1::SearchRequest {
            vector,
            k,
            scope: Some(v1::Scope {
                scope: Some(v1::scope::Scope::Tenant(true)),
            }),
            include_payload: true,
            ..Default::default()
        })
    }

    /// Payload field equals a JSON scalar (`json!("work")`, `json!(3)`).
    pub fn where_eq(mut self, field: impl Into<String>, value: serde_json::Value) -> Self {
        self.0
            .filter
            .get_or_insert_with(Default::default)
            .must
            .push(v1::Condition {
                field: field.into(),
                op: Some(v1::condition::Op::EqualsJson(value.to_string())),
            });
        self
    }

    /// Only memories created in `[after_ms, before_ms)` (milliseconds since the Unix epoch;
    /// `None` leaves that side open): "what did the user tell me last month".
    pub fn created_between(mut self, after_ms: Option<i64>, before_ms: Option<i64>) -> Self {
        let f = self.0.filter.get_or_insert_with(Default::default);
        f.created_after_ms = after_ms.unwrap_or(0);
        f.created_before_ms = before_ms.unwrap_or(0);
        self
    }

    /// Zone-local replica reads with bounded staleness instead of linearizable reads.
    pub fn bounded(mut self) -> Self {
        self.0.consistency = v1::Consistency::Bounded as i32;
        self
    }

    /// Fail instead of returning a partial result when a shard cannot answer.
    pub fn require_complete(mut self) -> Self {
        self.0.require_complete = true;
        self
    }

    pub fn ef(mut self, ef: u32) -> Self {
        self.0.ef = ef;
        self
    }

    pub fn tiers(mut self, tiers: &[v1::Tier]) -> Self {
        self.0.tiers = tiers.iter().map(|t| *t as i32).collect();
        self
    }

    pub fn include_vectors(mut self) -> Self {
        self.0.include_vectors = true;
        self
    }
}

/// One unary call with the client's retries: `rpc!(self, request, method)`.
macro_rules! rpc {
    ($client:ident, $req:expr, $method:ident) => {{
        let req = $req;
        $client
            .call(|mut c, t| {
                let r = Client::request(req.clone(), t);
                async move { c.$method(r).await }
            })
            .await
    }};
}

/// A connection to an Engram cluster through any of its nodes (or routers).
#[derive(Clone)]
pub struct Client {
    channels: Vec<Channel>,
    next: std::sync::Arc<AtomicUsize>,
    config: ClientConfig,
}

/// A fresh idempotency key.
pub fn idempotency_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Client {
    /// Connects lazily to `endpoints` (`http://host:port`); calls go to one and move to the
    /// next when it fails.
    pub async fn connect<I, S>(endpoints: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_config(endpoints, ClientConfig::default())
    }

    pub fn with_config<I, S>(endpoints: I, config: ClientConfig) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut channels = Vec::new();
        for e in endpoints {
            let e: String = e.into();
            let url = if e.contains("://") {
                e.clone()
            } else {
                format!("http://{e}")
            };
            let ep = Endpoint::from_shared(url)
                .map_err(|err| Error::config(format!("endpoint {e:?}: {err}")))?
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                // A node that stops answering (paused, cut off) fails the calls in flight
                // within a few seconds, and they move to the next endpoint.
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(1))
                .keep_alive_while_idle(true);
            channels.push(ep.connect_lazy());
        }
        if channels.is_empty() {
            return Err(Error::config("give at least one endpoint"));
        }
        let start = rand::random::<u32>() as usize % channels.len();
        Ok(Client {
            channels,
            next: std::sync::Arc::new(AtomicUsize::new(start)),
            config,
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Runs `f` against an endpoint, retrying retryable failures on the next endpoint with
    /// backoff until it succeeds, fails for good, or the call's timeout passes.
    async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, Error>
    where
        F: FnMut(EngramClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.config.timeout;
        let mut pause = self.config.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let i = self.next.load(Ordering::Relaxed) % self.channels.len();
            let client = EngramClient::new(self.channels[i].clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let left = deadline
                .saturating_duration_since(Instant::now())
                .min(self.config.attempt_timeout);
            let err = match tokio::time::timeout(left, f(client, left)).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(status)) => Error::from_status(&status),
                Err(_) => Error {
                    code: ErrorCode::DeadlineExceeded,
                    message: format!("no answer within {left:?}"),
                    metadata: Default::default(),
                },
            };
            if !err.is_retryable()
                || attempt >= self.config.max_attempts
                || Instant::now() + pause >= deadline
            {
                return Err(err);
            }
            tracing::debug!(attempt, error = %err, "retrying");
            // Another endpoint next time: the failure may be this node's.
            self.next.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.config.max_backoff);
        }
    }

    fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(timeout);
        r
    }

    /// Creates a collection (cosine metric) in the tenant's shards.
    pub async fn create_collection(
        &self,
        tenant: &str,
        name: &str,
        dimension: u32,
    ) -> Result<v1::Collection, Error> {
        self.create_collection_with(v1::CreateCollectionRequest {
            tenant: tenant.into(),
            name: name.into(),
            dimension,
            metric: v1::Metric::Cosine as i32,
            ..Default::default()
        })
        .await
    }

    /// Creates a collection with every option (metric, dedicated shards, tier policy).
    pub async fn create_collection_with(
        &self,
        req: v1::CreateCollectionRequest,
    ) -> Result<v1::Collection, Error> {
        rpc!(self, req, create_collection)
    }

    pub async fn describe_collection(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<v1::Collection, Error> {
        let req = v1::DescribeCollectionRequest {
            tenant: tenant.into(),
            name: name.into(),
        };
        rpc!(self, req, describe_collection)
    }

    pub async fn list_collections(&self, tenant: &str) -> Result<Vec<v1::Collection>, Error> {
        let req = v1::ListCollectionsRequest {
            tenant: tenant.into(),
        };
        Ok(rpc!(self, req, list_collections)?.collections)
    }

    pub async fn drop_collection(&self, tenant: &str, name: &str) -> Result<bool, Error> {
        let req = v1::DropCollectionRequest {
            tenant: tenant.into(),
            name: name.into(),
        };
        Ok(rpc!(self, req, drop_collection)?.dropped)
    }

    /// Writes one memory (a fresh idempotency key makes retries safe).
    pub async fn upsert(
        &self,
        tenant: &str,
        collection: &str,
        memory: MemoryInput,
    ) -> Result<v1::UpsertResponse, Error> {
        self.upsert_batch(tenant, collection, vec![memory], None)
            .await
    }

    /// Writes memories in one request. Pass the same `idempotency_key` when re-sending a
    /// batch after a failure, so memories already written are not written twice.
    pub async fn upsert_batch(
        &self,
        tenant: &str,
        collection: &str,
        memories: Vec<MemoryInput>,
        idempotency_key: Option<String>,
    ) -> Result<v1::UpsertResponse, Error> {
        let req = v1::UpsertBatchRequest {
            tenant: tenant.into(),
            collection: collection.into(),
            memories: memories.into_iter().map(|m| m.0).collect(),
            idempotency_key: idempotency_key.unwrap_or_else(idempotency_key_fresh),
        };
        rpc!(self, req, upsert_batch)
    }

    /// Memories of `user` by id (linearizable).
    pub async fn get(
        &self,
        tenant: &str,
        collection: &str,
        user: &str,
        ids: &[&str],
    ) -> Result<v1::GetResponse, Error> {
        let req = v1::GetRequest {
            tenant: tenant.into(),
            collection: collection.into(),
            user: user.into(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        rpc!(self, req, get)
    }

    /// A get with every option (consistency, vectors).
    pub async fn get_with(&self, req: v1::GetRequest) -> Result<v1::GetResponse, Error> {
        rpc!(self, req, get)
    }

    /// Forgets memories of `user` by id.
    pub async fn delete(
        &self,
        tenant: &str,
        collection: &str,
        user: &str,
        ids: &[&str],
    ) -> Result<u64, Error> {
        let req = v1::DeleteRequest {
            tenant: tenant.into(),
            collection: collection.into(),
            target: Some(v1::delete_request::Target::Ids(v1::IdsOfUser {
                user: user.into(),
                ids: ids.iter().map(|s| s.to_string()).collect(),
            })),
            idempotency_key: idempotency_key_fresh(),
        };
        Ok(rpc!(self, req, delete)?.deleted)
    }

    /// Forgets every memory of a user.
    pub async fn forget_user(
        &self,
        tenant: &str,
        collection: &str,
        user: &str,
    ) -> Result<u64, Error> {
        let req = v1::DeleteRequest {
            tenant: tenant.into(),
            collection: collection.into(),
            target: Some(v1::delete_request::Target::Filter(v1::FilteredScope {
                scope: Some(v1::Scope {
                    scope: Some(v1::scope::Scope::User(user.into())),
                }),
                filter: None,
            })),
            idempotency_key: idempotency_key_fresh(),
        };
        Ok(rpc!(self, req, delete)?.deleted)
    }

    /// Recall.
    pub async fn search(
        &self,
        tenant: &str,
        collection: &str,
        search: Search,
    ) -> Result<v1::SearchResponse, Error> {
        let mut req = search.0;
        req.tenant = tenant.into();
        req.collection = collection.into();
        rpc!(self, req, search)
    }

    pub async fn cluster_status(&self) -> Result<v1::ClusterStatusResponse, Error> {
        rpc!(self, v1::ClusterStatusRequest {}, cluster_status)
    }
}

fn idempotency_key_fresh() -> String {
    idempotency_key()
}

/// A toy text embedder (feature hashing of lower-cased words, L2-normalised) for demos and
/// examples that must run without a model. Texts sharing words get similar vectors; it is no
/// substitute for a real embedding model.
pub fn toy_embed(text: &str, dimension: usize) -> Vec<f32> {
    let mut v = vec![0f32; dimension.max(1)];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(|w| w.to_lowercase())
    {
        let h = xxhash_rust::xxh3::xxh3_64(word.as_bytes());
        let i = (h % v.len() as u64) as usize;
        v[i] += if (h >> 63) == 0 { 1.0 } else { -1.0 };
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        v[0] = 1.0;
    } else {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
