#!/usr/bin/env bash
# Runs `stackhook serve` on the example repository in services-example/, from this checkout.
# Starts a Docker engine if none answers and makes the example image locally (no registry).
# Any STACKHOOK_* variable you set wins over these defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$PWD

if [ -z "${DOCKER_HOST:-}${CONTAINER_HOST:-}" ]; then
    scripts/engines.sh docker
fi
scripts/busybox-image.sh stackhook-example/busybox:latest docker

state=${STACKHOOK_STATE_DIR:-$checkout/target/stackhook-state}
mkdir -p "$state"
if [ -z "${STACKHOOK_WEBHOOK_SECRET:-}${STACKHOOK_WEBHOOK_SECRET_FILE:-}" ]; then
    # A secret of its own for the example; GitHub would be given the same value.
    [ -s "$state/webhook-secret" ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$state/webhook-secret")
    export STACKHOOK_WEBHOOK_SECRET_FILE="$state/webhook-secret"
fi
export STACKHOOK_REPO=${STACKHOOK_REPO:-$checkout}
export STACKHOOK_SERVICES_DIR=${STACKHOOK_SERVICES_DIR:-services-example/services}
export STACKHOOK_STATE_DIR=$state
export STACKHOOK_LISTEN=${STACKHOOK_LISTEN:-127.0.0.1:1337}

echo "stackhook: deploying $STACKHOOK_REPO ($STACKHOOK_SERVICES_DIR) on http://$STACKHOOK_LISTEN; webhook secret in ${STACKHOOK_WEBHOOK_SECRET_FILE:-\$STACKHOOK_WEBHOOK_SECRET}" >&2
exec cargo run --release --quiet -- serve "$@"
