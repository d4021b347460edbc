#!/usr/bin/env bash
# Makes a tiny local image from Debian's static busybox, with no registry:
#   scripts/busybox-image.sh TAG [docker|podman]
# Does nothing when the engine already has TAG.
set -euo pipefail
tag=${1:?usage: busybox-image.sh TAG [docker|podman]}
cli=${2:-docker}
if [ "$cli" = docker ] && docker image inspect "$tag" >/dev/null 2>&1; then exit 0; fi
if [ "$cli" = podman ] && podman image exists "$tag" 2>/dev/null; then exit 0; fi
[ -x /bin/busybox ] || { echo "busybox-image.sh: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/www" "$root/data"
cp /bin/busybox "$root/bin/busybox"
for applet in sh ash cat date echo env false grep hostname httpd id ls mkdir nc ping ps rm sleep tail test touch true wget; do
    ln -s busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
tar -C "$root" -c . | "$cli" import --change 'ENV PATH=/bin' - "$tag" >/dev/null
echo "busybox-image.sh: made $tag with $cli" >&2
