#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls exactly this):
# installs what the tests need from Debian's packages, starts a Docker daemon
# when none answers (and stops it afterwards), runs formatting and lint
# checks, builds the default Spark image once for every end-to-end test,
# runs the unit and integration tests, the README's first command
# (scripts/demo.sh: a local cluster and the sample job), the end-to-end
# tests (the SSH push and launch tests on three namespaced hosts it starts
# and stops, then the object-storage tests against a SeaweedFS server on
# the same kind of hosts), the default image's digest from an empty cache
# on fresh Debian 12 and 13 rootfs (tests/rootfs-e2e.sh), and the Nix
# packaging checks.
# Downloads are cached in ~/.cache/ferry: a second run downloads nothing.
#
#   bash tests/run.sh            # everything
#   bash tests/run.sh --quick    # skip fmt/clippy and the Nix checks
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1

say() { printf '\n== %s\n' "$*"; }
state=$(mktemp -d /tmp/ferry-tests.XXXXXX)
started_dockerd=""
cleanup() {
  if [ -n "$started_dockerd" ]; then
    # the daemon's own pid (`$!` is the shell that started it): a daemon left
    # running on a removed data root breaks the next run's `docker load`
    local pid
    pid=$(cat "$state/docker.pid" 2>/dev/null || echo "$started_dockerd")
    as_root kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -rf "$state" 2>/dev/null || true
}
trap cleanup EXIT

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- tools from Debian's packages ------------------------------------------
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v umoci >/dev/null || missing+=(umoci)
command -v unshare >/dev/null || missing+=(util-linux)
command -v xz >/dev/null || missing+=(xz-utils)
# tests/debian.rs: a Debian archive of its own, signed with a key made there
command -v gpg >/dev/null || missing+=(gpg)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
# tests/rootfs-e2e.sh: minbase Debian 12 and 13 rootfs
command -v debootstrap >/dev/null || missing+=(debootstrap)
# src/ssh/session.rs: a login shell that is not POSIX (fish, tcsh) must be caught
command -v fish >/dev/null || missing+=(fish)
command -v tcsh >/dev/null || missing+=(tcsh)
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v ip >/dev/null || missing+=(iproute2)
# tests/nix_closure.rs: Nix closures as image inputs, run on a static busybox
command -v nix-store >/dev/null || missing+=(nix-bin)
# a locked sdist is prepared with this machine's own setuptools and wheel,
# never ones from the index at build time (Debian's python3 gets Debian's;
# another python3 first on the PATH, a pyenv one say, gets them from pip
# below, once, as part of setting up the machine)
py_tools=0
python3 -c 'import setuptools, wheel' 2>/dev/null || py_tools=1
[ $py_tools = 1 ] && [ "$(command -v python3)" = /usr/bin/python3 ] && missing+=(python3-setuptools python3-wheel)
{ [ -x /bin/busybox ] && ! grep -q /lib64/ld-linux /bin/busybox; } || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ] || ! apt-cache show busybox-static >/dev/null 2>&1; then
  say "installing: ${missing[*]:-(package lists only)}"
  as_root apt-get update -qq
  [ ${#missing[@]} -gt 0 ] && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! python3 -c 'import setuptools, wheel' 2>/dev/null; then
  say "installing setuptools and wheel for $(command -v python3)"
  python3 -m pip install --quiet setuptools wheel 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages setuptools wheel
fi

# --- a Docker daemon --------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (state in $state/docker)"
  as_root dockerd --data-root "$state/docker" --exec-root "$state/docker-exec" \
    --pidfile "$state/docker.pid" -H unix:///var/run/docker.sock >"$state/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 "$state/dockerd.log"; echo "dockerd did not start"; exit 1; }
fi

if [ $quick = 0 ]; then
  say "cargo fmt --check"
  cargo fmt --check
  say "cargo clippy"
  cargo clippy --all-targets --quiet -- -D warnings
fi

export FERRY_CACHE=${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}
say "building the default Spark image once for the end-to-end tests (cache: $FERRY_CACHE)"
cargo build --quiet
spark_def=images/spark/image.toml
export FERRY_SPARK_FRESH=0
if ! target/debug/ferry build "$spark_def" --out "$state/spark" --docker-archive "$state/spark.tar" 2>"$state/spark-build.log"; then
  cat "$state/spark-build.log" >&2
  if grep -q "failed for\|cannot download\|no longer served" "$state/spark-build.log"; then
    echo "NOTICE: a pinned input of images/spark is no longer served upstream; testing with a fresh lock of a copy (the committed lock is left alone)" >&2
    cp -r images/spark "$state/spark-def"
    spark_def="$state/spark-def/image.toml"
    export FERRY_SPARK_FRESH=1
    target/debug/ferry lock "$spark_def" --update
    target/debug/ferry build "$spark_def" --out "$state/spark" --docker-archive "$state/spark.tar"
    fresh=$(target/debug/ferry inspect "$state/spark" --json | sed -n 's/^ *"manifest_digest": "\(sha256:[0-9a-f]*\)".*/\1/p')
    echo "NOTICE: the fresh lock builds to $fresh; the committed lock of images/spark builds to $(cat images/spark/image.digest)" >&2
  else
    exit 1
  fi
fi
tail -1 "$state/spark-build.log"
export FERRY_SPARK_LAYOUT="$state/spark" FERRY_SPARK_ARCHIVE="$state/spark.tar" FERRY_SPARK_DEF="$spark_def"

say "cargo test"
# every integration-test file runs here, except push.rs, launch.rs and s3.rs,
# which need the namespaced hosts (and an S3 server) and run in the next steps
targets=()
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  case $name in push | launch | s3) ;; *) targets+=(--test "$name") ;; esac
done
cargo test --bins "${targets[@]}" 2>&1 | tee "$state/cargo-test.log"
[ "${PIPESTATUS[0]}" = 0 ] || exit 1

say "the README's first command: bash scripts/demo.sh (then its --down)"
demo_rc=0
bash scripts/demo.sh | tee "$state/demo.out" || demo_rc=$?
bash scripts/demo.sh --down
[ "$demo_rc" = 0 ] || { echo "scripts/demo.sh failed ($demo_rc)" >&2; exit 1; }
grep -Fqx "ferry-sample: pi=3.1412 top-words=[('the', 4), ('cluster', 2), ('spark', 2)]" "$state/demo.out" ||
  { echo "scripts/demo.sh did not print the sample job's answer" >&2; exit 1; }

say "end-to-end push and launch tests on namespaced hosts"
bash tests/push-e2e.sh

say "end-to-end object-storage tests (SeaweedFS and namespaced hosts)"
bash tests/s3-e2e.sh

# the default image's digest on other Debian releases than this machine's:
# minbase bookworm and trixie rootfs (cached in ~/.cache/ferry-tests), an
# empty FERRY_CACHE, the binary cargo built above
say "the default image from an empty cache on Debian 12 and 13 (tests/rootfs-e2e.sh)"
bash tests/rootfs-e2e.sh bookworm trixie

if [ $quick = 0 ]; then
  say "nix packaging checks"
  bash tests/nix/check.sh
fi
