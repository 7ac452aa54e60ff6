#!/usr/bin/env bash
# Installs the Debian packages the test suite drives: the reference registry, real clients
# (docker engine, skopeo, podman, buildah, umoci), PostgreSQL (the tests start their own server
# with initdb and pg_ctl), the load generator used by bench/, and for the deployment tests
# (tests/test_deploy_artifacts.py) debootstrap, which makes the image's local base, and nginx; for
# the supply-chain tests rpm (a real rpmdb, and rpm's own version order as an oracle) and Go (a
# binary whose embedded module list the SBOM reads), and npm (the SBOM tests' image has packages
# npm installs; Debian's nodejs and npm only where no npm is on the machine, as the machine's own
# Node.js may not come from Debian).
# Idempotent: does nothing when every tool is already present.
set -euo pipefail

packages=(docker-registry skopeo umoci jq curl wrk buildah podman runc uidmap conmon
          catatonit containernetworking-plugins docker.io busybox-static postgresql debootstrap
          nginx-light rpm golang-go)
tools=(docker-registry skopeo umoci jq curl wrk buildah podman runc dockerd busybox debootstrap nginx rpm go)

missing=0
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing=1
done
[ -x /usr/bin/docker ] || missing=1
node_packages=()
command -v npm >/dev/null 2>&1 || { node_packages=(nodejs npm); missing=1; }
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing=1
[ "$missing" = 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "system-deps: run as root to install: ${packages[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${packages[@]}" "${node_packages[@]}" >/dev/null
echo "system-deps: installed ${packages[*]} ${node_packages[*]}"
