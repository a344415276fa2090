#!/usr/bin/env bash
# The README's first command: from a fresh Debian/Ubuntu machine to a Spark
# job's answer. Installs Docker when missing, builds ferry, builds the
# built-in default image (Spark 3.5.3, ZooKeeper 3.8, Python 3.11 with numpy
# and pandas) from its pinned inputs, loads it into Docker, starts a local
# cluster with `ferry up --local` (ZooKeeper, a master in ZooKeeper recovery
# mode, a worker; host networking, ports 2181, 7077, 8080, 8081), runs the
# sample PySpark job with `ferry submit --local` and prints the answer and
# the UI address.
#
#   bash scripts/demo.sh          # leaves the cluster running
#   bash scripts/demo.sh --down   # stops and removes it
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if [ "${1:-}" = "--down" ]; then
  cargo build --release --quiet
  exec target/release/ferry down --local
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed: install Rust (\`apt-get install cargo\`, or rustup) and run this again" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  echo "== installing docker.io"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd"
  if command -v systemctl >/dev/null && as_root systemctl start docker 2>/dev/null; then :; else
    as_root sh -c 'nohup dockerd >/var/log/ferry-dockerd.log 2>&1 </dev/null &'
  fi
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "error: dockerd did not start: see /var/log/ferry-dockerd.log" >&2; exit 1; }
fi
# a locked sdist (pyspark) is prepared with this machine's own setuptools and
# wheel, never ones from the index at build time: Debian's python3 gets
# Debian's packages, another python3 first on the PATH gets them from pip
if ! python3 -c 'import setuptools, wheel' 2>/dev/null; then
  if [ "$(command -v python3)" = /usr/bin/python3 ]; then
    echo "== installing python3-setuptools python3-wheel"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-setuptools python3-wheel >/dev/null
  else
    echo "== installing setuptools and wheel for $(command -v python3)"
    python3 -m pip install --quiet setuptools wheel 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages setuptools wheel
  fi
fi

echo "== building ferry"
cargo build --release --quiet
ferry=target/release/ferry

mkdir -p out
echo "== building the default image (first time: downloads about 450 MB of pinned inputs into ~/.cache/ferry)"
if ! $ferry build --out out/spark --docker-archive out/spark.tar 2>out/.demo-build.log; then
  cat out/.demo-build.log >&2
  if grep -q "failed for\|cannot download\|no longer served" out/.demo-build.log; then
    echo "NOTICE: a pinned input is no longer served upstream; re-locking a copy into your cache and building that (the committed lock is unchanged)" >&2
    work="${XDG_CACHE_HOME:-$HOME/.cache}/ferry/demo-relock"
    rm -rf "$work" && mkdir -p "$work" && cp -r images/spark "$work/"
    $ferry lock "$work/spark/image.toml" --update
    $ferry build "$work/spark/image.toml" --out out/spark --docker-archive out/spark.tar
  else
    exit 1
  fi
else
  tail -1 out/.demo-build.log
fi
docker load -i out/spark.tar

echo "== starting a local cluster: ZooKeeper, a master, a worker (ferry up --local)"
$ferry up --local --image out/spark

echo "== running the sample job on the cluster (ferry submit --local)"
answer=$($ferry submit --local --image out/spark 2>/dev/null | grep '^ferry-sample:')
echo
echo "$answer"
echo
echo "Spark master UI: http://127.0.0.1:8080   (stop the cluster: bash scripts/demo.sh --down)"
