#!/usr/bin/env bash
# Benchmark of the default Spark image (images/spark), one command:
#
#   bash bench/spark-image.sh
#
# With warm downloads (the inputs in ~/.cache/ferry or $FERRY_CACHE; the
# first run downloads them) and an empty layer cache, it times in one run:
#   - ferry build of the image, cold (reading .debs, wheels and the pyspark
#     sdist, writing every layer), no-op rebuild, and a rebuild after the
#     sample job changed;
#   - the baseline `tar -c | gzip -6 | sha256sum` over the same files (the
#     image's layers unpacked into one tree);
# and prints each layer's size. Times are wall seconds (CPU seconds in
# brackets); the machine is shared, so compare the ratios of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,14p' "$0"; exit 0; fi
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }
cargo build --release --quiet
ferry=$PWD/target/release/ferry
main_cache=${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}
work=$(mktemp -d /tmp/ferry-spark-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# make sure every input is downloaded (not timed)
$ferry vendor images/spark/image.toml --to "$work/warm" --cache "$main_cache" >/dev/null 2>&1
rm -rf "$work/warm"
# a cache with the downloads but no built layers
mkdir -p "$work/cache"
ln -s "$main_cache/downloads" "$work/cache/downloads"

timed() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$work/t" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r wall user sys rss <"$work/t"
  printf '%-46s %7.2f s  (%6.2f s CPU, %4d MiB peak)\n' "$label" "$wall" "$(echo "$user + $sys" | bc)" $((rss / 1024))
  echo "$wall" >"$work/last"
}
command -v bc >/dev/null || apt-get install -y -qq bc >/dev/null

cp -r images/spark "$work/def"
echo "ferry $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
timed "ferry build, cold (inputs cached)" $ferry build "$work/def/image.toml" --out "$work/out1" --cache "$work/cache"
cold=$(cat "$work/last")
timed "ferry build, no-op" $ferry build "$work/def/image.toml" --out "$work/out1" --cache "$work/cache"
noop=$(cat "$work/last")
echo "# edited" >>"$work/def/files/opt/ferry/jobs/sample.py"
timed "ferry build, sample job changed" $ferry build "$work/def/image.toml" --out "$work/out2" --cache "$work/cache"
changed=$(cat "$work/last")

# the same files as one tree, for the baseline
mkdir "$work/tree"
for blob in $($ferry inspect "$work/out1" --json | python3 -c 'import json,sys; [print(l["digest"][7:]) for l in json.load(sys.stdin)["layers"]]'); do
  tar -xzf "$work/out1/blobs/sha256/$blob" -C "$work/tree" --numeric-owner
done
timed "tar -c | gzip -6 | sha256sum (same files)" sh -c "tar -C '$work/tree' -cf - . | gzip -6 | sha256sum"
base=$(cat "$work/last")
gz=$(tar -C "$work/tree" -cf - . | gzip -6 | wc -c)
ours=$($ferry inspect "$work/out1" --json | python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))')
echo
printf 'cold build: %.2fx faster than the baseline; no-op %.2f s; sample job changed %.2f s\n' "$(echo "$base / $cold" | bc -l)" "$noop" "$changed"
printf 'compressed: ferry %d bytes, gzip -6 %d bytes (%+.2f%%)\n' "$ours" "$gz" "$(echo "($ours - $gz) * 100 / $gz" | bc -l)"
echo
$ferry inspect "$work/out1" | sed -n '/#  layer/,/total/p'
