#!/usr/bin/env bash
# Installs the Debian packages of a single-node Ceph (mon, mgr, OSD) and radosgw, which the
# slow lane `make test-ceph` starts as a real S3 server (tests/support/ceph.py).
# Idempotent: does nothing when every tool is already present.
set -euo pipefail

packages=(ceph-mon ceph-osd ceph-mgr radosgw ceph-common)
tools=(ceph-mon ceph-osd ceph-mgr radosgw radosgw-admin ceph monmaptool ceph-authtool)

missing=0
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing=1
done
[ "$missing" = 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "ceph-deps: run as root to install: ${packages[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo "ceph-deps: installed ${packages[*]}"
