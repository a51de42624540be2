//! `engram-chaos`: Engram's chaos suite. See `chaos/README.md`.

pub mod checker;
pub mod history;
pub mod lin;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod run;
pub mod workload;
