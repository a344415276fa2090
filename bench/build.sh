#!/usr/bin/env bash
# Benchmark of `ferry build` against tar | gzip | sha256sum on a pinned ~1 GiB
# tree of real Debian content. Run `bash bench/build.sh --help` for details.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bash bench/build.sh [--write] [--runs N] [--keep] [--help]

Benchmarks `ferry build` on a pinned ~1 GiB tree of real, not already
compressed content (the unpacked files of a fixed list of Debian 12 packages)
and compares it with the shell pipelines that do the same work by hand.

What it does, in one run (about 5-10 minutes on 2 cores):
  1. builds ferry with `cargo build --release`;
  2. downloads the pinned .deb files with `apt-get download` into
     ${XDG_CACHE_HOME:-$HOME/.cache}/ferry-bench/debs (kept and reused between
     runs) and unpacks them with `dpkg-deb -x` into a temporary tree, one
     folder per layer (jdk, scripts, gcc, llvm: 200-330 MiB each);
  3. writes and locks benchmark image definitions in a temporary folder (never
     in the repository) with those folders as `path` layers;
  4. times, with /usr/bin/time (wall, user+sys CPU, peak RSS):
       - tar -cf - . | sha256sum, tar | gzip -1 | sha256sum and
         tar | gzip -6 | sha256sum (the baselines; gzip -6's size is kept);
       - ferry build, cold (empty cache), gzip;
       - ferry build, no-op rebuild with the same cache;
       - ferry build after changing one file of one layer (only that layer
         may rebuild);
       - ferry build, cold, compression = "none" and "zstd";
       - ferry build, cold, gzip, of one 2 GiB file made of the tree's files
         (peak RSS);
  5. prints a Markdown table with the numbers, the ratios and the targets:
       cold gzip >= 2.5x faster than tar | gzip -6 | sha256sum, with blobs
       within 1% of gzip -6's size; compression "none" within 1.3x of
       tar | sha256sum; no-op rebuild < 0.5 s; peak RSS < 100 MiB.

Options:
  --write    also write the table to bench/results-build.md
  --runs N   run each timed step N times and keep the fastest (default 1)
  --keep     keep the temporary folder (tree, caches, outputs) and print it
  -h, --help show this help

Environment:
  BENCH_TMP      where the temporary folder goes (default: ${TMPDIR:-/tmp});
                 needs about 7 GB free
  STEP_TIMEOUT   seconds after which one timed step is killed (default 900)

Needs: apt-get and dpkg-deb (Debian 12), cargo, GNU time and jq (installed
with apt-get if missing and running as root). The machine's load changes the
numbers: the script prints the load average before and after.
EOF
}

WRITE=0
RUNS=1
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --write) WRITE=1 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift ;;
        --runs=*) RUNS=${1#--runs=} ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$RUNS" in ''|*[!0-9]*|0) echo "build.sh: --runs needs a positive number" >&2; exit 2 ;; esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STEP_TIMEOUT=${STEP_TIMEOUT:-900}
DL_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/ferry-bench/debs"

# The pinned content: layer name, then the packages (name=version) unpacked
# into that layer's folder. Versions are those of Debian 12 (bookworm) and its
# security/updates suites; when the mirror no longer has a pinned version, the
# current one is taken with a warning, and the versions really used are printed.
LAYERS=(jdk scripts gcc llvm)
PKGS_jdk=(
    openjdk-17-jre-headless=17.0.21.1+2-1~deb12u1
    openjdk-17-jdk-headless=17.0.21.1+2-1~deb12u1
)
PKGS_scripts=(
    libpython3.11-stdlib=3.11.2-6+deb12u9
    python3.11=3.11.2-6+deb12u9
    libpython3.11=3.11.2-6+deb12u9
    libpython3.11-dev=3.11.2-6+deb12u9
    perl-modules-5.36=5.36.0-7+deb12u4
    libperl5.36=5.36.0-7+deb12u4
    golang-1.19-src=1.19.8-2
)
PKGS_gcc=(
    gcc-12=12.2.0-14+deb12u1
    cpp-12=12.2.0-14+deb12u1
    libgcc-12-dev=12.2.0-14+deb12u1
    libstdc++-12-dev=12.2.0-14+deb12u1
    gfortran-12=12.2.0-14+deb12u1
    libicu72=72.1-3+deb12u1
)
PKGS_llvm=(
    libllvm14=1:14.0.6-12
    libclang-cpp14=1:14.0.6-12
    libclang1-14=1:14.0.6-12
    llvm-14=1:14.0.6-12
    libz3-4=4.8.12-3.1
    libstd-rust-1.63=1.63.0+dfsg1-2
)
# The file the "one file changed" step appends to (in layer `scripts`).
CHANGED_LAYER=scripts
CHANGED_FILE=usr/lib/python3.11/os.py
BIG_SIZE=$((2 * 1024 * 1024 * 1024))

exec 4>&2 # progress lines, also from steps whose stderr goes to a file
log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
need_pkgs=()
[ -x /usr/bin/time ] || need_pkgs+=(time)
command -v jq >/dev/null || need_pkgs+=(jq)
command -v apt-get >/dev/null || die "apt-get is needed (Debian 12)"
command -v dpkg-deb >/dev/null || die "dpkg-deb is needed (Debian 12)"
command -v cargo >/dev/null || die "cargo is needed"
APT_UPDATED=0
apt_update() {
    if [ "$APT_UPDATED" = 0 ] && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >&2 || true
        APT_UPDATED=1
    fi
}
if [ ${#need_pkgs[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "please install: ${need_pkgs[*]}"
    log "installing ${need_pkgs[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

# --- temp folder, cleaned on exit --------------------------------------------
WORK=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/ferry-bench.XXXXXX")
cleanup() {
    local rc=$?
    if [ "$KEEP" = 1 ]; then
        echo "build.sh: kept $WORK" >&2
    else
        chmod -R u+w "$WORK" 2>/dev/null || true
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 1. ferry ------------------------------------------------------------------
log "cargo build --release"
(cd "$REPO" && cargo build --release --quiet) >&2
FERRY="$REPO/target/release/ferry"
[ -x "$FERRY" ] || die "no $FERRY after cargo build"
FERRY_COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    FERRY_COMMIT="$FERRY_COMMIT+dirty"
fi

# --- 2. the pinned tree ----------------------------------------------------------
mkdir -p "$DL_CACHE"
deb_file() { # name version -> path of the cached .deb, if any
    local f
    for f in "$DL_CACHE/$1_${2//:/%3a}_"*.deb; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}
fetch_deb() { # name=version -> prints the path of the .deb
    local name=${1%%=*} ver=${1#*=} f cand
    if f=$(deb_file "$name" "$ver"); then echo "$f"; return; fi
    if ! apt-cache show "$name=$ver" >/dev/null 2>&1; then apt_update; fi
    if apt-cache show "$name=$ver" >/dev/null 2>&1; then
        (cd "$DL_CACHE" && apt-get download -qq "$name=$ver" >&2) || true
    fi
    if f=$(deb_file "$name" "$ver"); then echo "$f"; return; fi
    cand=$(apt-cache policy "$name" 2>/dev/null | awk '/Candidate:/{print $2}')
    [ -n "$cand" ] && [ "$cand" != "(none)" ] || die "package $name is not known to apt (run apt-get update?)"
    echo "build.sh: warning: $name=$ver is not available any more, taking $cand" >&2
    if ! f=$(deb_file "$name" "$cand"); then
        (cd "$DL_CACHE" && apt-get download -qq "$name=$cand" >&2) || die "apt-get download $name=$cand failed"
        f=$(deb_file "$name" "$cand") || die "apt-get download $name=$cand left no .deb in $DL_CACHE"
    fi
    echo "$f"
}

TREE="$WORK/tree"
mkdir -p "$TREE"
VERSIONS=()
log "downloading (cache: $DL_CACHE) and unpacking the pinned packages"
for layer in "${LAYERS[@]}"; do
    mkdir -p "$TREE/$layer"
    declare -n pkgs="PKGS_$layer"
    for spec in "${pkgs[@]}"; do
        deb=$(fetch_deb "$spec")
        dpkg-deb -x "$deb" "$TREE/$layer"
        VERSIONS+=("$layer: $(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)")
    done
    unset -n pkgs
done
# dpkg-deb keeps the packages' modes: make every folder writable for the edit and the cleanup
chmod -R u+w "$TREE"
TREE_BYTES=$(du -sb "$TREE" | cut -f1)
TREE_FILES=$(find "$TREE" -type f | wc -l)
mib() { awk -v b="$1" 'BEGIN{printf "%.0f", b/1048576}'; }
mb() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1000000}'; }
{
    echo "tree: $TREE_BYTES bytes ($(mib "$TREE_BYTES") MiB) in $TREE_FILES files"
    for layer in "${LAYERS[@]}"; do
        echo "  $layer: $(mib "$(du -sb "$TREE/$layer" | cut -f1)") MiB"
    done
    echo "packages:"
    printf '  %s\n' "${VERSIONS[@]}"
} >&2

# --- 3. definitions -------------------------------------------------------------
write_def() { # dir compression layer... (each layer: name:path)
    local dir=$1 comp=$2; shift 2
    mkdir -p "$dir"
    {
        echo 'name = "bench/build"'
        echo 'tag = "1"'
        echo 'created = "2024-01-01T00:00:00Z"'
        echo "compression = \"$comp\""
        local l
        for l in "$@"; do
            printf '\n[[layer]]\nname = "%s"\n[[layer.source]]\npath = "%s"\ndest = "%s"\n' "${l%%:*}" "${l#*:}" "/"
        done
    } > "$dir/image.toml"
}
TREE_LAYERS=()
for layer in "${LAYERS[@]}"; do TREE_LAYERS+=("$layer:$TREE/$layer"); done
for comp in gzip none zstd; do
    write_def "$WORK/def-$comp" "$comp" "${TREE_LAYERS[@]}"
    "$FERRY" lock "$WORK/def-$comp/image.toml" --cache "$WORK/lock-cache" >/dev/null 2>&1 \
        || die "ferry lock $WORK/def-$comp/image.toml failed"
done

# --- timing -------------------------------------------------------------------
declare -A WALL CPU RSS
# timed LABEL CMD... : runs CMD (stdin/stdout/stderr as given) under /usr/bin/time
timed() {
    local label=$1; shift
    local tf="$WORK/time.$label" e u s m
    if ! timeout "$STEP_TIMEOUT" /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@"; then
        echo "build.sh: step \`$label\` failed or timed out (after ${STEP_TIMEOUT}s at most): $*" >&2
        cat "$tf" >&2 2>/dev/null || true
        return 1
    fi
    read -r e u s m < <(tail -n1 "$tf")
    # keep the fastest of --runs
    if [ -z "${WALL[$label]:-}" ] || awk -v a="$e" -v b="${WALL[$label]}" 'BEGIN{exit !(a<b)}'; then
        WALL[$label]=$e
        CPU[$label]=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')
        RSS[$label]=$m
    fi
    printf '   %-14s %7ss wall %7ss cpu %8s KiB max RSS\n' "$label" "$e" "$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')" "$m" >&4
}

log "warming the page cache"
tar -C "$TREE" -cf - . > /dev/null

log "baselines"
for ((r = 1; r <= RUNS; r++)); do
    timed tar_sha bash -c 'set -o pipefail; tar -C "$1" -cf - . | sha256sum > "$2/sum.tar"' _ "$TREE" "$WORK" || die "baseline failed"
    timed gzip1_sha bash -c 'set -o pipefail; tar -C "$1" -cf - . | gzip -1 | tee >(wc -c > "$2/size.gzip1") | sha256sum > "$2/sum.gzip1"; wait $!' _ "$TREE" "$WORK" || die "baseline failed"
    timed gzip6_sha bash -c 'set -o pipefail; tar -C "$1" -cf - . | gzip -6 | tee >(wc -c > "$2/size.gzip6") | sha256sum > "$2/sum.gzip6"; wait $!' _ "$TREE" "$WORK" || die "baseline failed"
done
TAR_BYTES=$(tar -C "$TREE" -cf - . | wc -c)
GZIP1_BYTES=$(cat "$WORK/size.gzip1")
GZIP6_BYTES=$(cat "$WORK/size.gzip6")
[ "$GZIP6_BYTES" -gt 0 ] || die "no gzip -6 size"

# ferry_build LABEL DEF CACHE OUT : a timed ferry build, JSON in $WORK/json.LABEL
ferry_build() {
    local label=$1 def=$2 cache=$3 out=$4
    if ! timed "$label" "$FERRY" build "$def" --cache "$cache" --out "$out" --json \
        > "$WORK/json.$label" 2> "$WORK/log.$label" < /dev/null; then
        tail -n 20 "$WORK/log.$label" >&2
        die "ferry build failed (step $label)"
    fi
}
blob_bytes() { jq '[.layers[].size] | add' "$WORK/json.$1"; }
rebuilt() { jq -r '[.layers[] | select(.cached | not) | .name] | join(",")' "$WORK/json.$1"; }

log "ferry build, cold, gzip"
for ((r = 1; r <= RUNS; r++)); do
    rm -rf "$WORK/cache-gzip" "$WORK/out-gzip"
    ferry_build cold_gzip "$WORK/def-gzip/image.toml" "$WORK/cache-gzip" "$WORK/out-gzip"
done
GZ_BYTES=$(blob_bytes cold_gzip)
sed 's/^/   /' "$WORK/log.cold_gzip" >&2

log "ferry build, no-op rebuild"
for ((r = 1; r <= RUNS; r++)); do
    ferry_build noop "$WORK/def-gzip/image.toml" "$WORK/cache-gzip" "$WORK/out-gzip"
done
NOOP_REBUILT=$(rebuilt noop)
NOOP_SAME=no
[ "$(jq -r .manifest_digest "$WORK/json.noop")" = "$(jq -r .manifest_digest "$WORK/json.cold_gzip")" ] && NOOP_SAME=yes

log "ferry build after changing $CHANGED_LAYER/$CHANGED_FILE"
for ((r = 1; r <= RUNS; r++)); do
    echo "# ferry bench edit $r $$" >> "$TREE/$CHANGED_LAYER/$CHANGED_FILE"
    ferry_build one_file "$WORK/def-gzip/image.toml" "$WORK/cache-gzip" "$WORK/out-gzip"
done
ONE_REBUILT=$(rebuilt one_file)
sed 's/^/   /' "$WORK/log.one_file" >&2

log "ferry verify (not timed)"
VERIFY=ok
"$FERRY" verify "$WORK/out-gzip" > "$WORK/log.verify" 2>&1 || { VERIFY="FAILED"; cat "$WORK/log.verify" >&2; }

log "ferry build, cold, compression = none"
for ((r = 1; r <= RUNS; r++)); do
    rm -rf "$WORK/cache-none" "$WORK/out-none"
    ferry_build cold_none "$WORK/def-none/image.toml" "$WORK/cache-none" "$WORK/out-none"
done
NONE_BYTES=$(blob_bytes cold_none)

log "ferry build, cold, compression = zstd"
for ((r = 1; r <= RUNS; r++)); do
    rm -rf "$WORK/cache-zstd" "$WORK/out-zstd"
    ferry_build cold_zstd "$WORK/def-zstd/image.toml" "$WORK/cache-zstd" "$WORK/out-zstd"
done
ZSTD_BYTES=$(blob_bytes cold_zstd)

# The same tree gives the same uncompressed layers whatever the compression:
# diff_ids of none and zstd must equal those of the (edited) gzip build.
DIFFIDS_SAME=yes
for l in none zstd; do
    [ "$(jq -c '[.layers[].diff_id]' "$WORK/json.cold_$l")" = "$(jq -c '[.layers[].diff_id]' "$WORK/json.one_file")" ] || DIFFIDS_SAME="no ($l differs)"
done
[ "$(jq -c '[.layers[].digest]' "$WORK/json.cold_none")" = "$(jq -c '[.layers[].diff_id]' "$WORK/json.cold_none")" ] || DIFFIDS_SAME="no (none: digest != diff_id)"

log "one 2 GiB file of real content"
# The tree's files, concatenated (again and again) up to 2 GiB.
(
    set +o pipefail
    for _ in 1 2 3 4; do
        find "$TREE" -type f -print0 | LC_ALL=C sort -z | xargs -0 cat
    done 2>/dev/null | head -c "$BIG_SIZE" > "$WORK/big.bin"
)
[ "$(stat -c %s "$WORK/big.bin")" = "$BIG_SIZE" ] || die "could not make the 2 GiB file"
mkdir -p "$WORK/def-big"
cat > "$WORK/def-big/image.toml" <<EOF
name = "bench/big"
tag = "1"
created = "2024-01-01T00:00:00Z"
compression = "gzip"

[[layer]]
name = "big"
[[layer.source]]
path = "$WORK/big.bin"
dest = "/big.bin"
EOF
"$FERRY" lock "$WORK/def-big/image.toml" --cache "$WORK/lock-cache" >/dev/null 2>&1 || die "ferry lock (big) failed"
cat "$WORK/big.bin" > /dev/null
for ((r = 1; r <= RUNS; r++)); do
    rm -rf "$WORK/cache-big" "$WORK/out-big"
    ferry_build big_gzip "$WORK/def-big/image.toml" "$WORK/cache-big" "$WORK/out-big"
done
BIG_BYTES=$(blob_bytes big_gzip)

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 4. the table ---------------------------------------------------------------
f2() { awk -v x="$1" 'BEGIN{printf "%.2f", x}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "inf" }'; }
check() { awk "BEGIN{ exit !($1) }" && echo "**met**" || echo "**missed**"; }
rss_mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }

ratio4() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.4f", a/b; else print "inf" }'; }
SPEEDUP_GZ=$(ratio4 "${WALL[gzip6_sha]}" "${WALL[cold_gzip]}")
CPU_GZ=$(ratio "${CPU[gzip6_sha]}" "${CPU[cold_gzip]}")
SIZE_GZ=$(ratio4 "$GZ_BYTES" "$GZIP6_BYTES")
SIZE_GZ_PCT=$(awk -v r="$SIZE_GZ" 'BEGIN{printf "%+.2f%%", (r-1)*100}')
NONE_SLOW=$(ratio4 "${WALL[cold_none]}" "${WALL[tar_sha]}")
row() { # label wall cpu rss size ratio target verdict
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$@"
}

TABLE=$(
    echo "# ferry build benchmark"
    echo
    echo "Made by \`bash bench/build.sh\` on $(date -u +%Y-%m-%d) (ferry $FERRY_COMMIT, $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -r))."
    echo "Load average before / after: $LOAD_BEFORE / $LOAD_AFTER. The machine is shared: the numbers are noisy; best of $RUNS run(s)."
    echo
    echo "Input: $(mib "$TREE_BYTES") MiB in $TREE_FILES files (tar stream $(mb "$TAR_BYTES") MB), the unpacked files of pinned Debian 12 packages, as $(echo "${#LAYERS[@]}") layers ($(for l in "${LAYERS[@]}"; do printf '%s %s MiB, ' "$l" "$(mib "$(du -sb "$TREE/$l" | cut -f1)")"; done | sed 's/, $//'))."
    echo "Files in the page cache for every step. CPU = user + sys. Ratio = baseline / ferry (higher is better for ferry), except where marked."
    echo
    row "step" "wall s" "CPU s" "peak RSS MiB" "size MB" "ratio" "target" "verdict"
    row "---" "---:" "---:" "---:" "---:" "---:" "---" "---"
    row "\`tar -cf - . \| sha256sum\`" "${WALL[tar_sha]}" "${CPU[tar_sha]}" "$(rss_mib "${RSS[tar_sha]}")" "$(mb "$TAR_BYTES")" "" "baseline" ""
    row "\`tar \| gzip -1 \| sha256sum\`" "${WALL[gzip1_sha]}" "${CPU[gzip1_sha]}" "$(rss_mib "${RSS[gzip1_sha]}")" "$(mb "$GZIP1_BYTES")" "" "reference" ""
    row "\`tar \| gzip -6 \| sha256sum\`" "${WALL[gzip6_sha]}" "${CPU[gzip6_sha]}" "$(rss_mib "${RSS[gzip6_sha]}")" "$(mb "$GZIP6_BYTES")" "" "baseline" ""
    row "ferry build, cold, gzip" "${WALL[cold_gzip]}" "${CPU[cold_gzip]}" "$(rss_mib "${RSS[cold_gzip]}")" "$(mb "$GZ_BYTES")" "$(f2 "$SPEEDUP_GZ")× faster (CPU: ${CPU_GZ}× less)" "≥ 2.5× faster than gzip -6" "$(check "$SPEEDUP_GZ >= 2.5")"
    row "↳ size vs gzip -6" "" "" "" "" "$(awk -v r="$SIZE_GZ" 'BEGIN{printf "%.3f", r}') (ferry/gzip -6: ${SIZE_GZ_PCT})" "≤ 1.01 (within 1% of gzip -6)" "$(check "$SIZE_GZ <= 1.01")"
    row "↳ peak RSS" "" "" "$(rss_mib "${RSS[cold_gzip]}")" "" "" "< 100 MiB" "$(check "${RSS[cold_gzip]} < 102400")"
    row "ferry build, no-op rebuild" "${WALL[noop]}" "${CPU[noop]}" "$(rss_mib "${RSS[noop]}")" "" "rebuilt: ${NOOP_REBUILT:-none}; same manifest: $NOOP_SAME" "< 0.5 s, nothing rebuilt" "$(check "${WALL[noop]} < 0.5 && \"$NOOP_REBUILT\" == \"\" && \"$NOOP_SAME\" == \"yes\"")"
    row "ferry build, one file changed in \`$CHANGED_LAYER\`" "${WALL[one_file]}" "${CPU[one_file]}" "$(rss_mib "${RSS[one_file]}")" "" "rebuilt: ${ONE_REBUILT:-none}" "only \`$CHANGED_LAYER\` rebuilt" "$(check "\"$ONE_REBUILT\" == \"$CHANGED_LAYER\"")"
    row "ferry build, cold, none" "${WALL[cold_none]}" "${CPU[cold_none]}" "$(rss_mib "${RSS[cold_none]}")" "$(mb "$NONE_BYTES")" "$(f2 "$NONE_SLOW")× (ferry/tar, lower is better)" "≤ 1.3× tar \| sha256sum" "$(check "$NONE_SLOW <= 1.3")"
    row "ferry build, cold, zstd" "${WALL[cold_zstd]}" "${CPU[cold_zstd]}" "$(rss_mib "${RSS[cold_zstd]}")" "$(mb "$ZSTD_BYTES")" "$(ratio "${WALL[gzip6_sha]}" "${WALL[cold_zstd]}")× faster than gzip -6; size $(ratio "$ZSTD_BYTES" "$GZIP6_BYTES") of it" "" ""
    row "ferry build, cold, gzip, one 2 GiB file" "${WALL[big_gzip]}" "${CPU[big_gzip]}" "$(rss_mib "${RSS[big_gzip]}")" "$(mb "$BIG_BYTES")" "" "peak RSS < 100 MiB" "$(check "${RSS[big_gzip]} < 102400")"
    echo
    echo "Checks: \`ferry verify\` of the gzip layout: $VERIFY; diff_ids equal for gzip, none and zstd: $DIFFIDS_SAME."
    echo
    echo "Packages (layer: name=version):"
    echo
    printf -- '- %s\n' "${VERSIONS[@]}"
)

echo
echo "$TABLE"
if [ "$WRITE" = 1 ]; then
    printf '%s\n' "$TABLE" > "$REPO/bench/results-build.md"
    echo >&2
    echo "build.sh: wrote bench/results-build.md" >&2
fi
