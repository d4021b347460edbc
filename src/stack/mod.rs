//! What should run: the stacks under the services directory and their compose projects.

pub mod compose;
mod interpolate;
