#!/usr/bin/env bash
# Test hosts for `ferry push`: N network namespaces `ferry-h1..N` on a bridge
# `ferry-br0` (10.231.0.1/24; hosts are 10.231.0.11, .12, ...). Each host has
# its own sshd (own host key, root login with a test key) running in its own
# mount namespace, so that its /var/lib/ferry is a private folder, and its own
# dockerd; commands run over ssh on a host see DOCKER_HOST pointing at that
# host's daemon. These addresses exist only inside this machine.
#
#   bash tests/hosts.sh up 3          # prints the folder to export as FERRY_E2E_HOSTS
#   bash tests/hosts.sh down          # stops everything; safe to run twice
#   bash tests/hosts.sh sshd-stop 2   # stop / start one host's sshd (for failure tests)
#   bash tests/hosts.sh sshd-start 2
#
# The folder ($FERRY_HOSTS_DIR, default /tmp/ferry-e2e-hosts) holds:
#   hosts         one line per host: name address
#   id_ed25519    the client key that logs in as root on every host
#   known_hosts   the hosts' keys
#   env           FERRY_E2E_HOSTS=<folder>, to source
#   hN/           per host: sshd config, host key, store, docker state, logs
set -euo pipefail

dir=${FERRY_HOSTS_DIR:-/tmp/ferry-e2e-hosts}
bridge=ferry-br0
net=10.231.0

say() { printf 'hosts.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (network namespaces and daemons need it)"

addr() { echo "$net.$((10 + $1))"; }

install_missing() {
  local missing=()
  command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  command -v nsenter >/dev/null || missing+=(util-linux)
  command -v ip >/dev/null || missing+=(iproute2)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

alive() { # a zombie has ended, even if nobody has reaped it yet
  [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Stops the processes named by pid files: SIGTERM to all at once, then waits
# (SIGKILL for any still there at the deadline).
stop_pidfiles() {
  local f pid pids=()
  for f in "$@"; do
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    if alive "$pid"; then kill "$pid" 2>/dev/null && pids+=("$pid"); fi
    rm -f "$f"
  done
  local deadline=$((SECONDS + 20))
  for pid in "${pids[@]}"; do
    while alive "$pid"; do
      if [ $SECONDS -ge $deadline ]; then kill -9 "$pid" 2>/dev/null || true; break; fi
      sleep 0.1
    done
  done
}

start_sshd() {
  local i=$1 h="$dir/h$1"
  mkdir -p /run/sshd /var/lib/ferry
  # sshd daemonises; its mount namespace lives as long as it does.
  nsenter --net=/var/run/netns/ferry-h"$i" unshare -m --propagation private \
    sh -c "mount --bind '$h/store' /var/lib/ferry && exec /usr/sbin/sshd -f '$h/sshd_config' -E '$h/sshd.log'"
}

wait_sshd() {
  local i=$1 deadline=$((SECONDS + ${2:-20}))
  until ssh -i "$dir/id_ed25519" -o BatchMode=yes -o UserKnownHostsFile="$dir/known_hosts" \
    -o StrictHostKeyChecking=yes -o ConnectTimeout=2 root@"$(addr "$i")" true 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { tail -5 "$dir/h$i/sshd.log" >&2 || true; die "sshd of ferry-h$i did not answer"; }
    sleep 0.2
  done
}

up() {
  local n=${1:?usage: hosts.sh up N}
  install_missing
  down_quiet
  mkdir -p "$dir"
  ssh-keygen -q -t ed25519 -N '' -C ferry-e2e -f "$dir/id_ed25519"
  cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
  : >"$dir/known_hosts"
  : >"$dir/hosts"

  ip link add "$bridge" type bridge
  ip addr add "$net.1/24" dev "$bridge"
  ip link set "$bridge" up

  local i
  for i in $(seq "$n"); do
    local name=ferry-h$i h="$dir/h$i" a
    a=$(addr "$i")
    mkdir -p "$h/store" "$h/docker" "$h/docker-exec"
    ip netns add "$name"
    ip link add "fh$i-br" type veth peer name "fh$i-ns"
    ip link set "fh$i-br" master "$bridge" up
    ip link set "fh$i-ns" netns "$name"
    ip -n "$name" link set "fh$i-ns" name eth0
    ip -n "$name" addr add "$a/24" dev eth0
    ip -n "$name" link set eth0 up
    ip -n "$name" link set lo up

    # dockerd first: it takes the longest; all of them start at once.
    # Not `ip netns exec`: it remounts /sys and dockerd then misses the cgroups.
    nsenter --net=/var/run/netns/"$name" setsid dockerd \
      --data-root "$h/docker" --exec-root "$h/docker-exec" \
      -H "unix:///run/$name-docker.sock" --pidfile "$h/docker.pid" \
      --bridge=none --iptables=false --ip-masq=false \
      >"$h/dockerd.log" 2>&1 </dev/null &

    ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$h/ssh_host_ed25519_key"
    cat >"$h/sshd_config" <<EOF
ListenAddress $a
Port 22
HostKey $h/ssh_host_ed25519_key
PidFile $h/sshd.pid
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile $dir/authorized_keys
SetEnv DOCKER_HOST=unix:///run/$name-docker.sock
Subsystem sftp internal-sftp
EOF
    echo "$a $(cut -d' ' -f1,2 "$h/ssh_host_ed25519_key.pub")" >>"$dir/known_hosts"
    echo "$name $a" >>"$dir/hosts"
    start_sshd "$i"
  done

  for i in $(seq "$n"); do wait_sshd "$i" 20; done

  local deadline=$((SECONDS + 45))
  for i in $(seq "$n"); do
    until docker -H "unix:///run/ferry-h$i-docker.sock" info >/dev/null 2>&1; do
      [ $SECONDS -lt $deadline ] || { tail -20 "$dir/h$i/dockerd.log" >&2; die "dockerd of ferry-h$i did not answer"; }
      sleep 0.2
    done
  done
  echo "FERRY_E2E_HOSTS=$dir" >"$dir/env"
  say "$n hosts up in ${SECONDS}s; known_hosts:"
  cat "$dir/known_hosts" >&2
  echo "$dir"
}

down_quiet() {
  local h i files=()
  for h in "$dir"/h*; do
    [ -d "$h" ] || continue
    files+=("$h/sshd.pid" "$h/docker.pid")
  done
  stop_pidfiles "${files[@]}"
  for h in "$dir"/h*; do
    [ -d "$h" ] || continue
    i=${h##*/h}
    rm -f "/run/ferry-h$i-docker.sock"
  done
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^ferry-h[0-9]+$/ {print $1}'); do
    ip netns del "$ns"
  done
  ip link del "$bridge" 2>/dev/null || true
  if [ -d "$dir" ]; then
    # dockerd unmounts its layers when it stops; anything left would block rm.
    awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf "$dir"
  fi
}

case "${1:-}" in
  up) up "${2:-}" ;;
  down) down_quiet; say "down" ;;
  sshd-stop) stop_pidfiles "$dir/h${2:?host number}/sshd.pid" ;;
  sshd-start) start_sshd "${2:?host number}"; wait_sshd "$2" 20 ;;
  *) die "usage: hosts.sh up N | down | sshd-stop I | sshd-start I" ;;
esac
