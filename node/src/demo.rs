//! Sample memories for `engram up --demo`: a few users of one tenant, embedded with the
//! SDK's toy embedder so a new user can search at once without a model.

use engram_client::{toy_embed, Client, ErrorCode, MemoryInput};
use serde_json::json;

pub const TENANT: &str = "demo";
pub const COLLECTION: &str = "memories";
pub const DIMENSION: u32 = 64;

const MEMORIES: &[(&str, &str, &str)] = &[
    (
        "alice",
        "preference",
        "Alice prefers green tea over coffee in the morning",
    ),
    (
        "alice",
        "fact",
        "Alice's daughter Maya starts school in September",
    ),
    (
        "alice",
        "preference",
        "Alice likes short answers with code examples in Rust",
    ),
    (
        "alice",
        "event",
        "Alice is travelling to Lisbon for a conference next week",
    ),
    ("alice", "fact", "Alice is allergic to peanuts"),
    (
        "bob",
        "preference",
        "Bob wants meeting summaries as bullet points",
    ),
    (
        "bob",
        "fact",
        "Bob runs the data platform team and owns the Kafka clusters",
    ),
    (
        "bob",
        "event",
        "Bob's marathon is on the first Sunday of April",
    ),
    ("bob", "preference", "Bob drinks his coffee black, no sugar"),
    (
        "carol",
        "fact",
        "Carol is learning Portuguese before moving to Porto",
    ),
    (
        "carol",
        "preference",
        "Carol prefers vegetarian restaurant suggestions",
    ),
    (
        "carol",
        "event",
        "Carol has a dentist appointment on Friday at 10am",
    ),
];

/// Creates the demo collection (if missing) and writes the sample memories (idempotently).
pub async fn load(client: &Client) -> Result<usize, engram_client::Error> {
    match client
        .create_collection(TENANT, COLLECTION, DIMENSION)
        .await
    {
        Ok(_) => {}
        Err(e) if e.code == ErrorCode::CollectionExists => {}
        Err(e) => return Err(e),
    }
    let batch: Vec<MemoryInput> = MEMORIES
        .iter()
        .enumerate()
        .map(|(i, (user, kind, text))| {
            MemoryInput::new(format!("m{i}"), *user, toy_embed(text, DIMENSION as usize))
                .text(*text)
                .payload(json!({ "kind": kind }))
        })
        .collect();
    let n = batch.len();
    client
        .upsert_batch(TENANT, COLLECTION, batch, Some("demo-load-v1".into()))
        .await?;
    Ok(n)
}
