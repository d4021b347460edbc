mod engine;
mod support;
