#!/usr/bin/env bash
# Benchmark of `ferry lock --update` of the default image's Debian packages
# (ferry reads the signed InRelease and Packages indexes itself and pins from
# them) against what pinning took before: `apt-get update && apt-get
# download` of the same packages, both cold, in the same run.
#
#   bash bench/lock.sh            # 3 rounds each
#   ROUNDS=5 bash bench/lock.sh
#
# Both sides start with empty caches each round: ferry with a fresh
# FERRY_CACHE (so the indexes are downloaded again), apt with fresh
# Dir::State::Lists and Dir::Cache folders (so `apt-get update` downloads its
# lists again). The mirrors are this machine's apt sources for both.
# Prints a Markdown table (wall seconds, best of the rounds) and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
command -v apt-get >/dev/null || { echo "bench/lock.sh needs apt-get (the baseline)" >&2; exit 1; }
cargo build --release --quiet
ferry=$PWD/target/release/ferry
work=$(mktemp -d /tmp/ferry-bench-lock.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r images/spark "$work/def"

# the packages the committed lock pins, as apt names them
python3 - "$work/def/image.lock" >"$work/specs" <<'EOF'
import sys, tomllib
lock = tomllib.load(open(sys.argv[1], "rb"))
for a in lock["artifact"]:
    if a["kind"] == "deb":
        arch = "" if a["arch"] == "all" else ":" + a["arch"]
        print(f'{a["name"]}{arch}={a["version"]}')
EOF
# the Debian sources of the definition: their package names select them
names=$(python3 - "$work/def/image.toml" <<'EOF'
import sys, tomllib
d = tomllib.load(open(sys.argv[1], "rb"))
for l in d["layer"]:
    for s in l.get("source", []):
        for p in s.get("deb", []):
            print(p.split("=")[0])
EOF
)

now() { date +%s.%N; }
best_ferry="" best_apt=""
for r in $(seq "$rounds"); do
  rm -rf "$work/cache" && mkdir -p "$work/cache"
  t0=$(now)
  # shellcheck disable=SC2086
  FERRY_CACHE="$work/cache" "$ferry" lock "$work/def/image.toml" --update $names 2>"$work/ferry.log"
  t1=$(now)
  rm -rf "$work/apt" && mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/dl"
  opts=(-o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache" -o APT::Sandbox::User=root -qq)
  t2=$(now)
  apt-get "${opts[@]}" update
  (cd "$work/apt/dl" && xargs apt-get "${opts[@]}" download <"$work/specs") 2>"$work/apt.log" || {
    cat "$work/apt.log" >&2
    echo "NOTE: apt-get download failed (a pin this machine's apt does not serve); its time is until the failure" >&2
  }
  t3=$(now)
  f=$(echo "$t1 - $t0" | bc) a=$(echo "$t3 - $t2" | bc)
  echo "round $r: ferry lock --update ${f}s, apt-get update && apt-get download ${a}s" >&2
  if [ -z "$best_ferry" ] || [ "$(echo "$f < $best_ferry" | bc)" = 1 ]; then best_ferry=$f; fi
  if [ -z "$best_apt" ] || [ "$(echo "$a < $best_apt" | bc)" = 1 ]; then best_apt=$a; fi
done
n=$(wc -l <"$work/specs")
printf '\n| %s Debian packages of the default image, cold, best of %s | wall (s) |\n|---|---|\n' "$n" "$rounds"
printf '| `ferry lock --update` (InRelease + Packages.xz of 3 suites, verified, resolved, pinned) | %.2f |\n' "$best_ferry"
printf '| `apt-get update && apt-get download` (the same pins) | %.2f |\n' "$best_apt"
printf '\nratio: apt / ferry = %.1fx\n' "$(echo "$best_apt / $best_ferry" | bc -l)"
