//! stackhook's integration tests: one binary, against real engines.

mod cli;
mod pipeline;
mod support;
