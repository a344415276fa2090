#!/usr/bin/env bash
# Checks ferry's Nix packaging offline: every .nix file parses, and the flake
# evaluates, checks, builds, runs and opens its dev shell against the nixpkgs
# stand-in in tests/nix/nixpkgs-standin (real nixpkgs needs the network).
# What it proves: the wiring, the outputs, the argument names and that name
# and version come from Cargo.toml. What it cannot: that ferry compiles under
# real nixpkgs; `nix build` on a networked machine does that.
#
# Run from anywhere as `bash tests/nix/check.sh`. Needs root and Debian's
# nix-bin (installed if missing): Nix runs here with no daemon and no sandbox,
# and the stand-in's builders use the host's /bin/bash and coreutils.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

skip() {
  echo "SKIP - nix: $1; the Nix packaging is NOT tested"
  if [ "${CI:-}" = true ]; then exit 1; fi
  exit 0
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log=$work/log

if ! command -v nix >/dev/null; then
  if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    skip "nix is not installed and cannot be (needs root and apt-get)"
  fi
  if ! apt-get install -y nix-bin >"$log" 2>&1; then
    { apt-get update && apt-get install -y nix-bin; } >"$log" 2>&1 \
      || { tail -n 5 "$log" >&2; skip "\`apt-get install nix-bin\` failed"; }
  fi
fi

# A private configuration, so the developer's own settings and caches play no part:
# no build users and no sandbox (root, no daemon), no binary cache to wait
# on, no global flake registry to download.
mkdir -p "$work/conf" "$work/home"
cat >"$work/conf/nix.conf" <<'EOF'
build-users-group =
sandbox = false
substituters =
flake-registry =
experimental-features = nix-command flakes
EOF
user_home=$HOME
export HOME=$work/home XDG_CACHE_HOME=$work/home/.cache XDG_CONFIG_HOME=$work/home/.config
export NIX_CONF_DIR=$work/conf
# A hung command (a fetch that should not happen) fails its check instead of the run.
nx() { timeout 60 nix "$@"; }

passed=0
failed=0
ok() {
  echo "ok - $1"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL - $1"
  failed=$((failed + 1))
  if [ -s "$log" ]; then tail -n 15 "$log" | sed 's/^/    /'; fi
}
# check WHAT COMMAND...: passes when COMMAND succeeds; its output goes to $log.
check() {
  local what=$1
  shift
  if "$@" >"$log" 2>&1; then ok "$what"; else fail "$what"; fi
}
# expect WHAT EXPECTED COMMAND...: passes when COMMAND prints exactly EXPECTED.
expect() {
  local what=$1 expected=$2 got
  shift 2
  if got=$("$@" 2>"$log"); then
    if [ "$got" = "$expected" ]; then ok "$what"; return; fi
    echo "expected \`$expected\`, got \`$got\`" >>"$log"
  fi
  fail "$what"
}

# [package] name and version, read without Nix so the flake is checked against
# an independent reading.
cargo_field() {
  awk -v key="$1" '
    /^\[/ { in_package = ($0 == "[package]") }
    in_package && $1 == key && $2 == "=" { split($0, q, "\""); print q[2]; exit }
  ' "$2"
}

for file in "$root/flake.nix" "$root"/nix/*.nix "$root"/tests/nix/nixpkgs-standin/*.nix; do
  check "parses: ${file#"$root"/}" nix-instantiate --parse "$file"
done

# The flake on a copy of the files it reads, locked to the stand-in.
flake=$work/flake
standin=$work/nixpkgs-standin
mkdir -p "$flake"
cp -r "$root/tests/nix/nixpkgs-standin" "$standin"
for path in flake.nix nix Cargo.toml Cargo.lock src tests images examples; do
  if [ -e "$root/$path" ]; then cp -r "$root/$path" "$flake/"; fi
done
if [ ! -e "$flake/Cargo.lock" ]; then
  check "Cargo.lock generated for the copy (none in the repo yet)" \
    env HOME="$user_home" cargo generate-lockfile --manifest-path "$flake/Cargo.toml"
fi
name=$(cargo_field name "$flake/Cargo.toml")
version=$(cargo_field version "$flake/Cargo.toml")
echo "# Cargo.toml: $name $version"

check "flake locks with nixpkgs overridden by the stand-in" \
  nx flake lock "path:$flake" --override-input nixpkgs "path:$standin"
check "nix flake show" nx flake show "path:$flake"

attr() { nx eval --raw "path:$flake#$1"; }
expect "package name is Cargo.toml's" "$name" attr packages.x86_64-linux.default.pname
expect "package version is Cargo.toml's" "$version" attr packages.x86_64-linux.default.version
expect "package derivation is named $name-$version" "$name-$version" attr packages.x86_64-linux.default.name
for output in \
  packages.x86_64-linux.default \
  packages.aarch64-linux.default \
  devShells.x86_64-linux.default \
  devShells.aarch64-linux.default \
  checks.x86_64-linux.build \
  checks.x86_64-linux.clippy \
  checks.x86_64-linux.fmt; do
  check "output $output is a derivation" attr "$output.drvPath"
done
expect "output apps.x86_64-linux.default is an app running bin/$name" "app $name" \
  nx eval --raw "path:$flake#apps.x86_64-linux.default" \
  --apply 'app: "${app.type} ${baseNameOf app.program}"'
expect "output overlays.default is an overlay (final: prev: ...)" "true" \
  nx eval --raw "path:$flake#overlays.default" \
  --apply 'o: if builtins.isFunction (o { }) then "true" else "false"'
expect "the package runs only the tests in the binary (cargo test --bins)" "true" \
  nx eval --raw "path:$flake#packages.x86_64-linux.default.cargoTestFlags" \
  --apply 'flags: if builtins.elem "--bins" flags then "true" else "false"'
source_listing() {
  local src
  src=$(attr packages.x86_64-linux.default.src) && ls "$src" | xargs
}
expect "the package source is Cargo.toml, Cargo.lock, src/, tests/, images/ and examples/ only" \
  "Cargo.lock Cargo.toml examples images src tests" source_listing
# The stand-in does not run cargo, so a file the code embeds but the source
# leaves out would only fail on a real `nix build`: look for each one.
missing_embeds() {
  local src file rel p
  src=$(attr packages.x86_64-linux.default.src) || return 1
  (cd "$root" && grep -rHoE --include='*.rs' 'include_(str|bytes)!\("[^"]+"\)' src |
    while IFS= read -r hit; do
      file=${hit%%:*}
      rel=$(printf '%s' "${hit#*:}" | sed -E 's/^include_(str|bytes)!\("(.*)"\)$/\2/')
      p=$(realpath -m --relative-to="$root" "$(dirname "$file")/$rel")
      [ -e "$src/$p" ] || echo "$p"
    done | sort -u | xargs)
}
expect "every file the code embeds (include_str!/include_bytes!) is in the package source" \
  "" missing_embeds

check "nix flake check builds the build, clippy and fmt checks" nx flake check -L "path:$flake"
expect "the clippy check denies warnings over all targets" "true" \
  nx eval --raw "path:$flake#checks.x86_64-linux.clippy.buildPhase" \
  --apply 'phase: if builtins.match ".*cargo clippy --offline --all-targets -- --deny warnings.*" phase != null then "true" else "false"'

check "nix build" nx build "path:$flake" --out-link "$work/result"
expect "nix build gives bin/$name" "$name $version (nixpkgs stand-in build)" "$work/result/bin/$name"
expect "nix run runs ferry" "$name $version (nixpkgs stand-in build)" nx run "path:$flake"

# The shell's tools, each of which must come from the store, not the host.
expect "nix develop puts the toolchain and the test tools on PATH" "" \
  nx develop "path:$flake" -c bash -c '
    for tool in cargo rustc cargo-clippy rustfmt pkg-config skopeo umoci docker ssh rclone; do
      case $(command -v "$tool") in /nix/store/*) ;; *) echo "missing $tool" ;; esac
    done'
expect "the dev shell has ferry's OpenSSL among its build inputs" "true" \
  nx eval --raw "path:$flake#devShells.x86_64-linux.default.buildInputs" \
  --apply 'inputs: if builtins.any (p: (builtins.parseDrvName p.name).name == "openssl") inputs then "true" else "false"'

expect "the overlay adds ferry to a package set" "$name-$version" \
  nx eval --impure --raw --expr "
    let pkgs = (builtins.getFlake \"path:$standin\").legacyPackages.x86_64-linux;
    in (pkgs.extend (builtins.getFlake \"path:$flake\").overlays.default).ferry.name"

# The stand-in is only worth something if it refuses what real nixpkgs would
# not take; cargoSha256 was removed from buildRustPackage.
standin_verdict() {
  local out
  if out=$(nx eval --impure --raw --expr "
    (builtins.getFlake \"path:$standin\").legacyPackages.x86_64-linux.rustPlatform.buildRustPackage {
      pname = \"x\"; version = \"1\"; src = $standin; cargoLock.lockFile = $standin/flake.nix;
      cargoSha256 = \"\";
    }" 2>&1); then
    echo accepted
  elif [[ $out == *"unexpected argument(s) cargoSha256"* ]]; then
    echo refused
  else
    echo "$out"
  fi
}
expect "the stand-in refuses an argument buildRustPackage does not take" refused standin_verdict

# Last, as it edits the copy: the version follows Cargo.toml, it is not copied.
sed -i "0,/^version = \".*\"/s//version = \"$version-bumped\"/" "$flake/Cargo.toml"
expect "a new version in Cargo.toml is the package's version" "$version-bumped" \
  attr packages.x86_64-linux.default.version

echo "nix: $passed passed, $failed failed"
[ "$failed" = 0 ]
