//! Compose variable interpolation.
