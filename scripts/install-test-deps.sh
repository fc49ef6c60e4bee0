#!/usr/bin/env bash
# Install, as root, the Debian packages that the client test suites use.
# Idempotent: does nothing when every tool is already there.
set -euo pipefail

# package:binary
NEEDED=(
  skopeo:/usr/bin/skopeo
  docker.io:/usr/sbin/dockerd
  docker.io:/usr/bin/docker
  podman:/usr/bin/podman
  buildah:/usr/bin/buildah
  uidmap:/usr/bin/newuidmap
  chromium:/usr/bin/chromium
  docker-registry:/usr/bin/docker-registry
)

missing=()
for entry in "${NEEDED[@]}"; do
  pkg=${entry%%:*} bin=${entry#*:}
  [ -x "$bin" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" != 0 ]; then
  echo "install-test-deps: run as root to install: ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
  apt_get update
fi
echo "install-test-deps: installing ${missing[*]}"
if ! apt_get install -y --no-install-recommends "${missing[@]}"; then
  apt_get update
  apt_get install -y --no-install-recommends "${missing[@]}"
fi
