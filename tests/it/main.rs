//! stackhook's integration tests: one binary, against real engines.

mod cli;
mod engine;
mod pipeline;
mod support;
