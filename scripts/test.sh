#!/usr/bin/env bash
# Runs every check and test. Installs and starts what the tests need first: Docker, Podman,
# busybox for local images, the docker-compose oracle, Chromium for the status page's browser
# test, sops and age-keygen for the SOPS tests (scripts/engines.sh), and the reverse proxies
# whose configurations the tests check (scripts/proxies.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/engines.sh all
scripts/engines.sh oracle
scripts/engines.sh browser
scripts/engines.sh sops
scripts/proxies.sh
scripts/engines.sh clean
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
