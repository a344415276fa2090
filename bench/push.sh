#!/usr/bin/env bash
# Benchmark of `ferry push` with the default Spark image, one command (root):
#
#   bash bench/push.sh
#   FERRY_SPARK_LAYOUT=out/spark FERRY_NET=232 bash bench/push.sh
#
# Starts three namespaced test hosts (tests/hosts.sh: own sshd and dockerd
# each, on a local bridge; FERRY_NET picks their subnet) and times, in the
# same run:
#   - the raw SSH limit: `cat <every blob> | ssh host 'cat > f'`;
#   - the usual way: `docker save IMAGE | ssh host docker load` (saved from
#     host 3's dockerd, so no Docker daemon is needed on this machine);
#   - ferry push, first push to 1 host, then to 3 hosts at once, each split
#     into sending (until every blob is verified and stored) and loading;
#   - ferry push of the unchanged image (nothing to send);
#   - ferry push after one layer changed (the sample job).
# Wall seconds, the controller's CPU seconds, and bytes counted on each
# host's link. The hosts share this machine's 2 cores with the controller,
# so 3 hosts vs 1 measures CPU contention, not the network. The image is
# FERRY_SPARK_LAYOUT when set, else built from images/spark.
# FERRY_BENCH_LINK=1gbit (any `tc` rate) shapes each host's link to that
# rate (tbf on its bridge port), for what a real network looks like: there
# the link, not this machine's CPU, is the limit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,25p' "$0"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "error: run as root (the test hosts need it)" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
command -v bc >/dev/null || apt-get install -y -qq bc >/dev/null
command -v docker >/dev/null || { echo "error: no docker command: install docker.io" >&2; exit 1; }

work=$(mktemp -d /tmp/ferry-push-bench.XXXXXX)
export FERRY_HOSTS_DIR=${FERRY_HOSTS_DIR:-$work/hosts}
trap 'bash tests/hosts.sh down >/dev/null 2>&1; rm -rf "$work"' EXIT
cargo build --release --quiet
ferry=$PWD/target/release/ferry
if [ -n "${FERRY_SPARK_LAYOUT:-}" ]; then
  cp -r "$FERRY_SPARK_LAYOUT" "$work/spark"
else
  $ferry build --out "$work/spark" 2>/dev/null
fi
bash tests/hosts.sh up 3 >/dev/null
link=${FERRY_BENCH_LINK:-}
if [ -n "$link" ]; then
  for i in 1 2 3; do
    tc qdisc replace dev "$(sed -n "${i}p" "$FERRY_HOSTS_DIR/hosts" | cut -d' ' -f3)" root tbf rate "$link" burst 1mb latency 100ms
  done
fi
key="$FERRY_HOSTS_DIR/id_ed25519"
kh="$FERRY_HOSTS_DIR/known_hosts"
addr() { sed -n "$1p" "$FERRY_HOSTS_DIR/hosts" | cut -d' ' -f2; }
sshh() { local i=$1; shift; ssh -i "$key" -o BatchMode=yes -o UserKnownHostsFile="$kh" -o StrictHostKeyChecking=yes "root@$(addr "$i")" "$@"; }
wire() { cat "/sys/class/net/$(sed -n "$1p" "$FERRY_HOSTS_DIR/hosts" | cut -d' ' -f3)/statistics/tx_bytes"; }
reset() { for i in "$@"; do sshh "$i" 'rm -rf /var/lib/ferry/* /tmp/raw; docker rmi -f $(docker images -q) >/dev/null 2>&1; true'; done; }
payload=$(du -cb "$work"/spark/blobs/sha256/* | tail -1 | cut -f1)

row() { # label hosts command...
  local label=$1 hosts=$2; shift 2
  local b=0 a=0
  for i in $hosts; do b=$((b + $(wire "$i"))); done
  /usr/bin/time -f "%e %U %S" -o "$work/t" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  for i in $hosts; do a=$((a + $(wire "$i"))); done
  read -r wall user sys <"$work/t"
  local n; n=$(echo "$hosts" | wc -w)
  printf '| %s | %.2f | %.2f | %.3f | %.1f |\n' "$label" "$wall" "$(echo "$user + $sys" | bc)" \
    "$(echo "($a - $b) / $n / 1000000" | bc -l)" "$(echo "$payload * 8 / $wall / 1000000 * $n" | bc -l)"
  echo "$wall" >"$work/last"
}
auth=(-i "$key" --known-hosts "$kh" --json)
urls() { for i in "$@"; do printf 'ssh://root@%s ' "$(addr "$i")"; done; }
# seconds until the last host stored every blob (its "loading into docker" line)
sent_at() { grep ': loading into docker' "$work/err" | awk '{print $1}' | tr -d s | sort -n | tail -1; }

echo "ferry $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); image: $(echo "$payload / 1000000" | bc) MB of blobs; links: ${link:-unshaped}"
echo
echo "| step | wall s | controller CPU s | MB on the wire per host | image Mbit/s (all hosts) |"
echo "| --- | ---: | ---: | ---: | ---: |"
# the source of `docker save`: host 3's dockerd (pushed there untimed)
reset 1 3
$ferry push "$work/spark" $(urls 3) "${auth[@]}" >/dev/null 2>&1
ref=$(sed -n 's/.*"io.containerd.image.name":"\([^"]*\)".*/\1/p' "$work/spark/index.json")
h3sock=unix:///run/$(sed -n 3p "$FERRY_HOSTS_DIR/hosts" | cut -d' ' -f1)-docker.sock
reset 1
row "raw SSH: cat blobs \| ssh 'cat > f', 1 host" "1" sh -c "cat '$work'/spark/blobs/sha256/* | ssh -i '$key' -o UserKnownHostsFile='$kh' root@$(addr 1) 'cat > /tmp/raw'"
raw=$(cat "$work/last")
reset 1
row "docker save \| ssh docker load, 1 host" "1" sh -c "docker -H $h3sock save $ref | ssh -i '$key' -o UserKnownHostsFile='$kh' root@$(addr 1) docker load"
save=$(cat "$work/last")
reset 1
row "ferry push, first, 1 host" "1" $ferry push "$work/spark" $(urls 1) "${auth[@]}"
first1=$(cat "$work/last")
# where the first push spends its time: the progress lines carry timestamps
loading=$(sent_at)
reset 1 2 3
row "ferry push, first, 3 hosts" "1 2 3" $ferry push "$work/spark" $(urls 1 2 3) "${auth[@]}"
first3=$(cat "$work/last")
loading3=$(sent_at)
row "ferry push, unchanged, 3 hosts" "1 2 3" $ferry push "$work/spark" $(urls 1 2 3) "${auth[@]}"
again=$(cat "$work/last")
cp -r images/spark "$work/def"
echo "# changed" >>"$work/def/files/opt/ferry/jobs/sample.py"
$ferry build "$work/def/image.toml" --out "$work/changed" 2>/dev/null
row "ferry push, sample job changed, 3 hosts" "1 2 3" $ferry push "$work/changed" $(urls 1 2 3) "${auth[@]}"
changed_sent=$(grep -o '"bytes_sent": [0-9]*' "$work/out" | head -1 | awk '{print $2}')
echo
printf 'first push to 1 host: %.2fx the raw SSH throughput, %.2fx faster than docker save | ssh docker load\n' \
  "$(echo "$raw / $first1" | bc -l)" "$(echo "$save / $first1" | bc -l)"
printf 'first push to 1 host: %.2f s sending and checking blobs (%.2fx the raw SSH throughput), then %.2f s loading\n' \
  "$loading" "$(echo "$raw / $loading" | bc -l)" "$(echo "$first1 - $loading" | bc -l)"
printf 'first push to 3 hosts: %.2f s until the last host stored every blob, then %.2f s loading\n' \
  "$loading3" "$(echo "$first3 - $loading3" | bc -l)"
printf 'unchanged image to 3 hosts: %.2f s\n' "$again"
printf 'sample job changed: %s bytes of blobs sent to each host (the image has %s)\n' "$changed_sent" "$payload"
