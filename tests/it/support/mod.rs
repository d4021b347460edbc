//! What the integration tests share: images, repositories, a running server.

pub mod image;
pub mod registry;
pub mod repo;
pub mod server;
