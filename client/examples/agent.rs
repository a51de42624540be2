//! An agent that stores and recalls one user's memories.
//!
//! Start a cluster (`make up`, or `engram up --demo`), then:
//!     cargo run -p engram-client --example agent -- --endpoint http://127.0.0.1:7101
//!
//! It writes what the user "said" as memories, then, for each new question, recalls the most
//! relevant memories of that user (user scope: one shard) and of the whole tenant (fan-out).
//! Embeddings come from the SDK's toy embedder; a real agent would call its embedding model.

use clap::Parser;
use engram_client::{toy_embed, Client, ErrorCode, MemoryInput, Search};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Any node's public endpoint (repeat for several).
    #[arg(long, default_value = "http://127.0.0.1:7101")]
    endpoint: Vec<String>,
    #[arg(long, default_value = "agent-demo")]
    tenant: String,
    #[arg(long, default_value = "dana")]
    user: String,
}

const DIM: usize = 64;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let client = Client::connect(args.endpoint.clone()).await?;
    match client
        .create_collection(&args.tenant, "memories", DIM as u32)
        .await
    {
        Ok(c) => println!(
            "created collection {}/{} ({} shards)",
            c.tenant, c.name, c.shards
        ),
        Err(e) if e.code == ErrorCode::CollectionExists => {}
        Err(e) => return Err(e.into()),
    }

    // What the user told the agent over a few conversations.
    let said = [
        (
            "pref-drink",
            "I always drink oolong tea, never coffee",
            "preference",
        ),
        (
            "fact-pet",
            "My dog is called Pixel and she is a border collie",
            "fact",
        ),
        (
            "fact-work",
            "I work as a nurse on night shifts at the city hospital",
            "fact",
        ),
        (
            "event-trip",
            "We are going hiking in the Dolomites in July",
            "event",
        ),
        (
            "pref-style",
            "Please keep answers short and friendly",
            "preference",
        ),
    ];
    let batch = said
        .iter()
        .map(|(id, text, kind)| {
            MemoryInput::new(*id, args.user.as_str(), toy_embed(text, DIM))
                .text(*text)
                .payload(json!({ "kind": kind }))
        })
        .collect();
    let w = client
        .upsert_batch(
            &args.tenant,
            "memories",
            batch,
            Some(format!("onboarding-{}", args.user)),
        )
        .await?;
    println!(
        "stored {} memories of {} ({})",
        said.len(),
        args.user,
        if w.replayed {
            "already there: idempotent replay"
        } else {
            "new"
        }
    );

    for question in [
        "what should I offer to drink, tea or coffee?",
        "any plans for the summer hiking trip?",
        "tell me about the dog",
    ] {
        let q = toy_embed(question, DIM);
        let r = client
            .search(
                &args.tenant,
                "memories",
                Search::user(args.user.as_str(), q, 2),
            )
            .await?;
        println!("\nQ: {question}");
        for h in r.hits {
            let m = h.memory.unwrap_or_default();
            println!("  {:.3}  {}", h.score, m.text.unwrap_or_default());
        }
    }

    let prefs = client
        .search(
            &args.tenant,
            "memories",
            Search::tenant(toy_embed("preferences about answers", DIM), 3)
                .where_eq("kind", json!("preference")),
        )
        .await?;
    println!(
        "\ntenant-wide, kind = preference: {} hits (partial: {})",
        prefs.hits.len(),
        prefs.partial
    );
    Ok(())
}
