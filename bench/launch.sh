#!/usr/bin/env bash
# Benchmark of `ferry up` for the issue's cluster, one command (root):
#
#   bash bench/launch.sh
#   FERRY_SPARK_LAYOUT=out/spark FERRY_NET=232 ROUNDS=5 bash bench/launch.sh
#
# Starts three namespaced test hosts (tests/hosts.sh: own sshd and dockerd
# each), delivers the default Spark image with a first `ferry up` (untimed),
# then times, in the same run, ROUNDS times each (default 3):
#   - ferry: `ferry down` then `ferry up` with the image already on the
#     hosts, until it returns, i.e. until its gates saw the ZooKeeper
#     ensemble with a leader, one master ALIVE and every worker registered
#     with it (3 ZooKeeper servers, 2 masters, 2 workers on 3 hosts);
#   - everything at once, the hand-written way without gates: the same 7
#     containers, already created and stopped, started on all hosts at the
#     same moment (`docker start` over ssh, in parallel), timed until a
#     master answers ALIVE on /json/ with both workers ALIVE (they were
#     stopped workers first, masters next, so ZooKeeper keeps no workers,
#     as on fresh hosts). No files are written and no containers created,
#     so this is a lower bound for any ungated script.
# and the memory the running cluster uses (`docker stats`, per role).
# The hosts share this machine's cores with the controller. The image is
# FERRY_SPARK_LAYOUT when set, else built from images/spark.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,23p' "$0"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "error: run as root (the test hosts need it)" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
command -v bc >/dev/null || apt-get install -y -qq bc >/dev/null
command -v jq >/dev/null || apt-get install -y -qq jq >/dev/null
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null
rounds=${ROUNDS:-3}

work=$(mktemp -d /tmp/ferry-launch-bench.XXXXXX)
export FERRY_HOSTS_DIR=${FERRY_HOSTS_DIR:-$work/hosts}
trap '[ -f "$work/c.toml" ] && $ferry down "$work/c.toml" --purge --known-hosts "$FERRY_HOSTS_DIR/known_hosts" >/dev/null 2>&1; bash tests/hosts.sh down >/dev/null 2>&1; rm -rf "$work"' EXIT
cargo build --release --quiet
ferry=$PWD/target/release/ferry
if [ -n "${FERRY_SPARK_LAYOUT:-}" ]; then
  layout=$(realpath "$FERRY_SPARK_LAYOUT")
else
  $ferry build --out "$work/spark" 2>/dev/null
  layout=$work/spark
fi
bash tests/hosts.sh up 3 >/dev/null
key="$FERRY_HOSTS_DIR/id_ed25519"
kh="$FERRY_HOSTS_DIR/known_hosts"
addr() { sed -n "$1p" "$FERRY_HOSTS_DIR/hosts" | cut -d' ' -f2; }
sshh() { local i=$1; shift; ssh -i "$key" -o BatchMode=yes -o UserKnownHostsFile="$kh" -o StrictHostKeyChecking=yes "root@$(addr "$i")" "$@"; }

{
  printf 'name = "bench"\n\n[image]\nlayout = "%s"\n' "$layout"
  for i in 1 2 3; do
    printf '\n[[host]]\nname = "h%s"\naddress = "%s"\nssh = { key = "%s" }\n' "$i" "$(addr "$i")" "$key"
  done
  cat <<'EOF'

[zookeeper]
hosts = ["h1", "h2", "h3"]
jvm_options = ["-Xmx128m"]

[spark.masters]
hosts = ["h1", "h2"]
jvm_options = ["-Xmx256m"]

[spark.workers]
hosts = ["h2", "h3"]
cores = 1
memory = "512m"
jvm_options = ["-Xmx128m"]
EOF
} >"$work/c.toml"
f() { $ferry "$1" "$work/c.toml" --known-hosts "$kh" "${@:2}"; }

# a master ALIVE on /json/ with 2 ALIVE workers
registered() {
  local i
  for i in 1 2; do
    curl -s --max-time 1 "http://$(addr "$i"):8080/json/" 2>/dev/null |
      jq -e '.status == "ALIVE" and ([.workers[] | select(.state == "ALIVE")] | length) == 2' >/dev/null 2>&1 && return 0
  done
  return 1
}

echo "ferry $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); 3 ZooKeeper, 2 masters, 2 workers on 3 hosts"
f up >/dev/null 2>"$work/first.err" || { cat "$work/first.err" >&2; exit 1; }

ferry_s=() ferry_cpu=() once_s=()
for r in $(seq "$rounds"); do
  f down >/dev/null 2>&1
  /usr/bin/time -f "%e %U %S" -o "$work/t" $ferry up "$work/c.toml" --known-hosts "$kh" >/dev/null 2>"$work/up.err" ||
    { cat "$work/up.err" >&2; exit 1; }
  read -r wall user sys <"$work/t"
  registered || { echo "error: ferry up returned before the workers registered" >&2; exit 1; }
  ferry_s+=("$wall")
  ferry_cpu+=("$(echo "$user + $sys" | bc)")

  # the same containers stopped, workers first (so the masters keep no
  # workers in ZooKeeper, as on fresh hosts), then all started at once
  for role in worker master zookeeper; do
    for i in 1 2 3; do sshh "$i" "docker stop -t 10 \$(docker ps -q --filter label=ferry.cluster=bench --filter name=-$role) >/dev/null 2>&1 || true" & done
    wait
  done
  t0=$(date +%s.%N)
  for i in 1 2 3; do sshh "$i" 'docker start $(docker ps -aq --filter label=ferry.cluster=bench) >/dev/null' & done
  wait
  deadline=$(( $(date +%s) + 300 ))
  until registered || [ "$(date +%s)" -ge "$deadline" ]; do sleep 0.2; done
  if registered; then
    once_s+=("$(echo "$(date +%s.%N) - $t0" | bc)")
  else
    once_s+=(300)
    echo "round $r: the ungated start did not register both workers within 300 s (counted as 300)"
  fi
  printf 'round %s: ferry up %.1f s (controller CPU %.2f s); everything at once %.1f s\n' \
    "$r" "$wall" "${ferry_cpu[-1]}" "${once_s[-1]}"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
fm=$(median "${ferry_s[@]}")
om=$(median "${once_s[@]}")
echo
echo "| start, image on the hosts, until every worker is registered | median s | runs |"
echo "| --- | ---: | --- |"
printf '| ferry up (writes files, creates containers, gated) | %.1f | %s |\n' "$fm" "${ferry_s[*]}"
printf '| every container started at once (docker start, no gates) | %.1f | %s |\n' "$om" "$(printf '%.1f ' "${once_s[@]}")"
printf '\nferry / everything at once: %.2fx the time\n' "$(echo "$fm / $om" | bc -l)"

# memory of the idle cluster (after the last start), per role
deadline=$(( $(date +%s) + 60 ))
until registered || [ "$(date +%s)" -ge "$deadline" ]; do sleep 0.5; done
for i in 1 2 3; do sshh "$i" "docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' \$(docker ps -q --filter label=ferry.cluster=bench)"; done >"$work/mem"
echo
echo "| role | containers | memory in use, MiB |"
echo "| --- | ---: | ---: |"
awk '
  function mib(s) { v = s + 0; if (s ~ /GiB/) v *= 1024; else if (s ~ /KiB/) v /= 1024; else if (s ~ /[0-9]B$/) v /= 1048576; return v }
  { role = $1; sub(/^ferry-bench-/, "", role); n[role]++; m[role] += mib($2); total += mib($2); c++ }
  END { for (r in m) printf "| %s | %d | %.0f |\n", r, n[r], m[r]; printf "| all | %d | %.0f |\n", c, total }
' "$work/mem"
