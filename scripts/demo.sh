#!/usr/bin/env bash
# The README's first command: from a fresh Debian/Ubuntu machine to a running
# image built by ferry. Installs what is missing (Rust is expected; Docker,
# skopeo come from the distribution), builds ferry, locks and builds the
# default image, loads it into Docker and runs it.
#
# Today the default image is the small BusyBox image in images/busybox; when
# the Spark image lands (images/spark) this script builds that instead, starts
# a local cluster and runs the sample job.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed: install Rust (e.g. \`apt-get install cargo\` or rustup) and run this again" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  echo "== installing docker.io"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd"
  if command -v systemctl >/dev/null && systemctl start docker 2>/dev/null; then :; else
    as_root sh -c 'nohup dockerd >/var/log/ferry-dockerd.log 2>&1 </dev/null &'
  fi
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi

echo "== building ferry"
cargo build --release --quiet
ferry=target/release/ferry
image=images/busybox/image.toml

echo "== checking the lock"
if ! $ferry vendor "$image" --to "${XDG_CACHE_HOME:-$HOME/.cache}/ferry/demo-bundle" >/dev/null 2>&1; then
  echo "notice: a pinned input of $image is no longer served upstream; re-locking into your cache (the committed lock is unchanged)" >&2
  work=$(mktemp -d)
  cp -r images/busybox "$work/"
  image="$work/busybox/image.toml"
  $ferry lock "$image" --update
fi

echo "== building $image"
$ferry build "$image" --out out/busybox --docker-archive out/busybox.tar
$ferry verify out/busybox
docker load -i out/busybox.tar
echo "== running it"
docker run --rm ferry/busybox:1.35
