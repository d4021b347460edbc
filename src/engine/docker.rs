//! The Docker-compatible socket API, spoken through bollard, for Docker and Podman alike.
