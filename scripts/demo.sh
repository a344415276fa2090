#!/usr/bin/env bash
# The README's first command: from a fresh Debian/Ubuntu machine to a Spark
# job's answer. Installs what is missing with apt (a C toolchain,
# pkg-config, OpenSSL's headers, CA certificates, Docker, python3 with pip,
# Debian's archive keyring), builds ferry, builds the
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

# --- what building and running ferry needs ----------------------------------
# Debian's package names, and what each is for on a machine without apt
need=() what=()
# shellcheck disable=SC2206 # $1 is one or more package names
want() { need+=($1); what+=("$2"); }
command -v cc >/dev/null || want build-essential "a C toolchain (cc)"
command -v pkg-config >/dev/null || want pkg-config "pkg-config"
[ -f /usr/include/openssl/ssl.h ] || pkg-config --exists openssl 2>/dev/null || want libssl-dev "OpenSSL's headers"
[ -f /etc/ssl/certs/ca-certificates.crt ] || want ca-certificates "CA certificates"
command -v dockerd >/dev/null || docker info >/dev/null 2>&1 || want docker.io "Docker"
# Debian 13's docker.io leaves its client to docker-cli (a recommends)
command -v docker >/dev/null || want docker-cli "Docker's client"
# ferry fetches the pinned PyPI files itself, from the index pip is
# configured with: it asks python3's pip which one (and `ferry lock` runs pip)
if ! python3 -c 'import pip' 2>/dev/null; then
  want "python3 python3-pip" "python3 with pip"
fi
# ferry checks the Debian archive's signatures against it
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || want debian-archive-keyring "Debian's archive keyring (/usr/share/keyrings/debian-archive-keyring.gpg)"
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    printf -v list '%s, ' "${what[@]}"
    echo "error: install ${list%, } with this machine's package manager, then run this again" >&2
    exit 1
  fi
  as_root apt-get update -qq
  # Debian 12 has no docker-cli: its docker.io holds the client
  if [[ " ${need[*]} " == *" docker-cli "* ]] && ! apt-cache show docker-cli >/dev/null 2>&1; then
    kept=()
    for p in "${need[@]}"; do [ "$p" = docker-cli ] || kept+=("$p"); done
    need=("${kept[@]}")
    [[ " ${need[*]} " == *" docker.io "* ]] || need+=(docker.io)
  fi
  echo "== installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd"
  if command -v systemctl >/dev/null && as_root systemctl start docker 2>/dev/null; then :; else
    as_root sh -c 'nohup dockerd >/var/log/ferry-dockerd.log 2>&1 </dev/null &'
  fi
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "error: dockerd did not start: see /var/log/ferry-dockerd.log" >&2; exit 1; }
fi

echo "== building ferry"
cargo build --release --quiet
ferry=target/release/ferry

mkdir -p out
echo "== building the default image (first time: downloads about 450 MB of pinned inputs into ~/.cache/ferry)"
if ! $ferry build --out out/spark --docker-archive out/spark.tar 2>out/.demo-build.log; then
  # ferry names every input it could not fetch on one line: show its start
  tail -n 5 out/.demo-build.log | cut -c1-600 >&2
  if grep -q "failed for\|cannot download\|no longer served\|was not found" out/.demo-build.log; then
    # never a silent re-lock: the image would no longer be images/spark/image.digest
    echo "error: the committed pins of images/spark cannot be fetched (full log: out/.demo-build.log): point ferry at a snapshot of the Debian archive that still serves them (\`FERRY_DEBIAN_MIRROR=URL bash scripts/demo.sh\`), or re-lock with \`$ferry lock images/spark/image.toml --update\`, which changes the image (it is then not images/spark/image.digest)" >&2
  else
    echo "error: building the default image failed (full log: out/.demo-build.log)" >&2
  fi
  exit 1
fi
tail -1 out/.demo-build.log
built=$($ferry inspect out/spark --json | sed -n 's/^ *"manifest_digest": "\(sha256:[0-9a-f]*\)".*/\1/p')
expected=$(cat images/spark/image.digest)
if [ "$built" != "$expected" ]; then
  echo "warning: the default image built to $built, but images/spark/image.digest is $expected" >&2
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
