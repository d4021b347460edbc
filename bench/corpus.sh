#!/usr/bin/env bash
# Measures how much of the compose corpus stackhook accepts (bench/corpus/README.md): installs the
# docker-compose oracle, runs `cargo run --release --example corpus` over the corpus and compares
# its listing with bench/corpus/expected.txt; exits non-zero, printing the changed lines, when a
# verdict changed.
#   bench/corpus.sh [DIR]     # default: $CORPUS_DIR, else ../shared/compose-corpus beside the
#                             # checkout if it exists, else /tmp/compose-corpus
# To accept new verdicts: cargo run --release --example corpus -- DIR --write bench/corpus/expected.txt
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-${CORPUS_DIR:-../shared/compose-corpus}}
if [ $# -eq 0 ] && [ -z "${CORPUS_DIR:-}" ] && [ ! -d "$dir" ]; then
    dir=/tmp/compose-corpus
fi

scripts/engines.sh oracle
cargo run --release --quiet --example corpus -- "$dir" --expected bench/corpus/expected.txt
