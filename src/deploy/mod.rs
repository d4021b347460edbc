//! Deployments: plan (pure), apply through the engine, and the worker that runs one at a time.

pub mod labels;
pub mod plan;
