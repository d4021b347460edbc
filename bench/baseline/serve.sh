#!/usr/bin/env bash
# Runs adnanh/webhook (Debian's `webhook`) with hooks.json.tmpl: a signed GitHub push to
# http://$BASE_LISTEN/hooks/deploy runs deploy.sh and answers with its output once it finished.
#   BASE_REPO=... BASE_DIR=... BASE_WEBHOOK_SECRET=... [BASE_LISTEN=127.0.0.1:19000] serve.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
listen=${BASE_LISTEN:-127.0.0.1:19000}
: "${BASE_REPO:?}" "${BASE_DIR:?}" "${BASE_WEBHOOK_SECRET:?}"
export BASE_DEPLOY_SCRIPT=${BASE_DEPLOY_SCRIPT:-$here/deploy.sh}
mkdir -p "$BASE_DIR"
exec webhook -template -hooks "$here/hooks.json.tmpl" -ip "${listen%:*}" -port "${listen##*:}" "$@"
