//! `engram-bench`: Engram's benchmark driver. Thin: parses arguments and calls the library.

use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,hnsw_rs=warn,openraft=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = engram_bench::Cli::parse();
    if let Err(e) = engram_bench::run(cli) {
        eprintln!("engram-bench: {e}");
        std::process::exit(1);
    }
}
