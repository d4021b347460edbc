#!/usr/bin/env bash
# Installs the validators of deploy/ that the tests run: haproxy, caddy, nginx and systemd-analyze,
# from Debian's packages. Idempotent: what is already there is left alone. Traefik is not packaged
# by Debian, so deploy/traefik.yml is not validated here.
set -euo pipefail

missing=()
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v caddy >/dev/null || missing+=(caddy)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v systemd-analyze >/dev/null || missing+=(systemd)
[ ${#missing[@]} -eq 0 ] && exit 0

[ "$(id -u)" = 0 ] || { echo "proxies.sh: run as root (or install ${missing[*]} yourself)" >&2; exit 1; }
echo "proxies.sh: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
