#!/usr/bin/env bash
# Runs the end-to-end tests of `nix` sources (tests/nix_closure.rs): small
# Nix closures locked, built into images, checked with skopeo and umoci and
# run in Docker. Installs Debian's nix-bin and busybox-static when missing
# (needs root and apt-get); Nix then runs as root with no daemon, under the
# private nix.conf the tests write. Docker is used when a daemon answers
# `docker info`; otherwise that part skips loudly.
#
# Run from anywhere as `bash tests/nix/closure-e2e.sh`; under 3 minutes
# once ferry is compiled.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

need=()
command -v nix-store >/dev/null || need+=(nix-bin)
# the images may run only a static busybox (Nix does not track the host's glibc)
if ! [ -x /bin/busybox ] || grep -q /lib64/ld-linux /bin/busybox; then
  need+=(busybox-static)
fi
for tool in skopeo umoci; do
  command -v "$tool" >/dev/null || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "*** cannot install ${need[*]} (needs root and apt-get): the tests will skip ***" >&2
  else
    echo "# installing ${need[*]}"
    apt-get install -y "${need[@]}" >/dev/null 2>&1 ||
      { apt-get update >/dev/null && apt-get install -y "${need[@]}" >/dev/null; }
  fi
fi
if ! docker info >/dev/null 2>&1; then
  echo "*** no Docker daemon answers \`docker info\`: the images will NOT be run ***" >&2
fi

cd "$root"
exec cargo test --test nix_closure -- --test-threads 2 "$@"
