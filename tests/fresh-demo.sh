#!/usr/bin/env bash
# A manual trial, not part of tests/run.sh: the README's first command on a
# fresh machine. Turns the minbase rootfs tests/rootfs-e2e.sh cached for
# SUITE (debootstrap's, before any package is added) into a Docker image
# with only rustup's default toolchain, this machine's network settings
# (apt sources as a fresh install has them, local CA certificates, pip's
# configuration) and a `git clone` of this checkout's HEAD, then runs
# `bash scripts/demo.sh` (and its --down) in a container that can run a
# dockerd of its own, and prints the wall time. It compiles ferry: about 15
# minutes on 2 cores.
#
# Needs root; uses a dockerd of its own (private socket and data root,
# no bridge, no iptables rules), stopped afterwards. The container shares
# this machine's network (the demo's cluster listens on 2181, 7077, 8080
# and 8081, which must be free).
#
#   bash tests/fresh-demo.sh trixie
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
suite=${1:?usage: bash tests/fresh-demo.sh SUITE (bookworm, trixie)}
base=${FERRY_TEST_CACHE:-$HOME/.cache/ferry-tests}/rootfs/$suite.tar

if [ "$(id -u)" != 0 ]; then
  echo "error: tests/fresh-demo.sh needs root (a dockerd of its own): run it with sudo" >&2
  exit 1
fi
if [ ! -f "$base" ]; then
  echo "error: no minbase rootfs \`$base\`: run \`bash tests/rootfs-e2e.sh $suite\` first" >&2
  exit 1
fi
for port in 2181 7077 8080 8081; do
  if ss -Hltn "sport = :$port" | grep -q .; then
    echo "error: port $port is in use on this machine (a cluster from scripts/demo.sh? stop it with \`bash scripts/demo.sh --down\`)" >&2
    exit 1
  fi
done
if ! command -v dockerd >/dev/null; then
  echo "== installing docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

state=$(mktemp -d /tmp/ferry-fresh-demo.XXXXXX)
export DOCKER_HOST=unix://$state/docker.sock
image=ferry-fresh-demo-$suite
container=$image-$$
cleanup() {
  docker rm -fv "$container" >/dev/null 2>&1 || true
  local pid
  pid=$(cat "$state/docker.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  fi
  # what dockerd leaves mounted (its network namespace file), deepest first
  findmnt -rn -o TARGET | grep "^$state/" | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf --one-file-system "$state"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- the machine: minbase, the network's settings, rustup, the repository --
stage=$state/stage
mkdir "$stage"
tar --numeric-owner --xattrs -C "$stage" -xpf "$base"
bash tests/rootfs-e2e.sh --sources "$suite" >"$stage/etc/apt/sources.list.d/debian.sources"
rm -f "$stage/etc/apt/sources.list"
if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
  mkdir -p "$stage/usr/local/share/ca-certificates"
  cp -r /usr/local/share/ca-certificates/. "$stage/usr/local/share/ca-certificates/"
fi
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$stage/etc/pip.conf"; fi
# the container shares this machine's network namespace: its dockerd must
# not add a bridge or iptables rules to it (the demo's containers use the
# host network anyway); it shares this machine's cgroup hierarchy too (see
# below), so its containers' cgroups go under a parent of their own
mkdir -p "$stage/etc/docker"
echo '{"bridge": "none", "iptables": false, "ip6tables": false, "cgroup-parent": "ferry-fresh-demo"}' >"$stage/etc/docker/daemon.json"
# rustup's default toolchain only, and no crate cache
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
toolchain=$(rustup default | cut -d' ' -f1)
mkdir -p "$stage/root/.rustup/toolchains" "$stage/root/.cargo"
cp "$rustup_home/settings.toml" "$stage/root/.rustup/"
cp -a "$rustup_home/toolchains/$toolchain" "$stage/root/.rustup/toolchains/"
cp -a "$cargo_home/bin" "$cargo_home/env" "$stage/root/.cargo/"
git clone --quiet "$repo" "$stage/root/ferry"
echo "== $suite: the machine is minbase + rustup ($toolchain) + a clone of $(git -C "$stage/root/ferry" log --oneline -1 | cut -c1-60)"

echo "== starting a dockerd of its own (state in $state)"
dockerd --data-root "$state/docker" --exec-root "$state/exec" --pidfile "$state/docker.pid" \
  -H "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false >"$state/dockerd.log" 2>&1 &
deadline=$((SECONDS + 60))
until docker info >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    tail -20 "$state/dockerd.log" >&2
    echo "error: dockerd did not answer within 60s" >&2
    exit 1
  fi
  sleep 0.5
done
tar --numeric-owner --xattrs -C "$stage" -c . | docker import - "$image" >/dev/null
rm -rf --one-file-system "$stage"

envs=(-e HOME=/root -e LANG=C.UTF-8 -e PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
for v in $(compgen -e); do
  case $v in
    PIP_* | FERRY_DEBIAN_MIRROR | http_proxy | https_proxy | no_proxy | HTTP_PROXY | HTTPS_PROXY | NO_PROXY) envs+=(-e "$v=${!v}") ;;
  esac
done
echo "== $suite: bash scripts/demo.sh in a fresh container"
start=$SECONDS
rc=0
# the flags a dockerd inside a container needs on this kind of machine
# (--privileged is refused: CAP_SYS_RESOURCE is not in the bounding set);
# /var/lib/docker on a volume, not on the container's own overlay; the
# cgroup hierarchy writable (it is read-only in a container that is not
# privileged, and runc inside fails to make its containers' cgroups)
docker run --name "$container" --network host \
  --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined \
  --mount type=volume,dst=/var/lib/docker -v /sys/fs/cgroup:/sys/fs/cgroup \
  "${envs[@]}" "$image" \
  bash -c 'cd /root/ferry && rc=0 && bash scripts/demo.sh || rc=$?; bash scripts/demo.sh --down || true; exit $rc' || rc=$?
took=$((SECONDS - start))
if [ $rc = 0 ]; then
  echo "fresh-demo $suite: passed in ${took}s"
else
  echo "fresh-demo $suite: FAILED (exit $rc) after ${took}s" >&2
  exit 1
fi
