#!/usr/bin/env bash
# Test hosts for `ferry push` and `ferry up`: N network namespaces
# `ferry231-h1..N` on a bridge `fb231` (10.231.0.1/24; hosts are 10.231.0.11,
# .12, ...). FERRY_NET=232 makes a second, independent set (10.232.0.x,
# `ferry232-h*`), so two test runs can share a machine. Each host has its own
# dockerd and sshd (own host key, root login with a test key), both in one
# mount namespace of the host's own, where /var/lib/ferry and /etc/ferry are
# private folders (a cluster's files and a container's bind mounts agree);
# commands run over ssh on a host see DOCKER_HOST pointing at that host's
# daemon. These addresses exist only inside this machine.
#
#   bash tests/hosts.sh up 3          # prints the folder to export as FERRY_E2E_HOSTS
#   bash tests/hosts.sh up 3 --behind 1 --users
#   bash tests/hosts.sh down          # stops everything; safe to run twice
#   bash tests/hosts.sh sshd-stop 2   # stop / start one host's sshd (for failure tests)
#   bash tests/hosts.sh sshd-start 2
#
# Options of `up`:
#   --behind J   one more host, `ferry231-hJb`, reachable only through host J:
#                a second link from J's namespace to its own subnet
#                (10.231.J.2; J's side is 10.231.J.1), not on the bridge and
#                not routed from here. Same sshd, dockerd and key as the others.
#   --users      two login users on every host (they are the machine's users:
#                namespaces share /etc/passwd), named by FERRY_NET:
#                `ferryop231` may run anything as root with `sudo -n` (a
#                sudoers drop-in), `ferryno231` may not use sudo at all.
#                Both log in with id_ed25519. `down` removes them.
#
# The folder ($FERRY_HOSTS_DIR, default /tmp/ferry-e2e-hosts) holds:
#   hosts         one line per host: name address veth (the bridge side of its link)
#   id_ed25519    the client key that logs in as root on every host
#   known_hosts   the hosts' keys (the hidden host's too, under its own address)
#   behind        with --behind: name address J (the host it hides behind)
#   users         with --users: one line per user: name sudo|none
#   env           FERRY_E2E_HOSTS=<folder>, to source
#   hN/           per host: sshd config, host key, store, docker state, logs
set -euo pipefail

netid=${FERRY_NET:-231}
case $netid in 2[0-4][0-9] | 25[0-4]) ;; *) echo "hosts.sh: FERRY_NET must be a number from 200 to 254" >&2; exit 1 ;; esac
dir=${FERRY_HOSTS_DIR:-/tmp/ferry-e2e-hosts-$netid}
bridge=fb$netid
net=10.$netid.0
ns() { echo "ferry$netid-h$1"; }
veth() { echo "f${netid}h$1b"; }
sudo_user=ferryop$netid
plain_user=ferryno$netid
sudoers=/etc/sudoers.d/ferry-e2e-$netid

say() { printf 'hosts.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (network namespaces and daemons need it)"

# Host ids are numbers (on the bridge) or `Jb` (the host hidden behind J).
addr() { case $1 in *b) echo "10.$netid.${1%b}.2" ;; *) echo "$net.$((10 + $1))" ;; esac; }
# Runs a command in the network namespace from which host $1 is reachable.
from_net_of() {
  local id=$1; shift
  case $id in *b) nsenter --net=/var/run/netns/"$(ns "${id%b}")" "$@" ;; *) "$@" ;; esac
}

install_missing() {
  local missing=()
  command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  command -v nsenter >/dev/null || missing+=(util-linux)
  command -v ip >/dev/null || missing+=(iproute2)
  if [ "${1:-}" = users ]; then
    command -v sudo >/dev/null || missing+=(sudo)
    command -v useradd >/dev/null || missing+=(passwd)
  fi
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

# dockerd runs in a mount namespace of its own where the host's folders are
# bind-mounted; sshd joins that namespace, so what a session writes under
# /etc/ferry is what a container's bind mount sees.
start_dockerd() {
  local i=$1 h="$dir/h$1" name
  name=$(ns "$i")
  mkdir -p /var/lib/ferry /etc/ferry "$h/store" "$h/etc" "$h/docker" "$h/docker-exec"
  # Not `ip netns exec`: it remounts /sys and dockerd then misses the cgroups.
  nsenter --net=/var/run/netns/"$name" unshare -m --propagation private sh -c "
    mount --bind '$h/store' /var/lib/ferry && mount --bind '$h/etc' /etc/ferry &&
    exec setsid dockerd --data-root '$h/docker' --exec-root '$h/docker-exec' \
      -H 'unix:///run/$name-docker.sock' --pidfile '$h/docker.pid' \
      --bridge=none --iptables=false --ip-masq=false" >"$h/dockerd.log" 2>&1 </dev/null &
  echo $! >"$h/dockerd.shell"
}

# Host key, sshd_config, and the lines of known_hosts and hosts (or behind).
configure_sshd() {
  local i=$1 h="$dir/h$1" name a
  name=$(ns "$i")
  a=$(addr "$i")
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
}

start_sshd() {
  local i=$1 h="$dir/h$1" pid deadline=$((SECONDS + 30))
  mkdir -p /run/sshd
  # the namespace is ready once dockerd runs in it with the bind mounts in place
  until pid=$(cat "$h/docker.pid" 2>/dev/null) && grep -q " /etc/ferry " "/proc/$pid/mounts" 2>/dev/null; do
    alive "$(cat "$h/dockerd.shell")" || { tail -5 "$h/dockerd.log" >&2; die "dockerd of $(ns "$i") exited"; }
    [ $SECONDS -lt $deadline ] || die "the mount namespace of $(ns "$i") was not ready"
    sleep 0.1
  done
  nsenter --net=/var/run/netns/"$(ns "$i")" --mount="/proc/$pid/ns/mnt" \
    /usr/sbin/sshd -f "$h/sshd_config" -E "$h/sshd.log"
}

wait_sshd() {
  local i=$1 deadline=$((SECONDS + ${2:-20}))
  until from_net_of "$i" ssh -i "$dir/id_ed25519" -o BatchMode=yes -o UserKnownHostsFile="$dir/known_hosts" \
    -o StrictHostKeyChecking=yes -o ConnectTimeout=2 root@"$(addr "$i")" true 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { tail -5 "$dir/h$i/sshd.log" >&2 || true; die "sshd of $(ns "$i") did not answer"; }
    sleep 0.2
  done
}

up() {
  local n=${1:?usage: hosts.sh up N [--behind J] [--users]} behind="" users=""
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      --behind) behind=${2:?--behind needs a host number}; shift 2 ;;
      --users) users=1; shift ;;
      *) die "unknown option $1 of up" ;;
    esac
  done
  if [ -n "$behind" ]; then
    case $behind in *[!0-9]*) die "--behind $behind: not a host number" ;; esac
    [ "$behind" -ge 1 ] && [ "$behind" -le "$n" ] || die "--behind $behind: there is no host $behind"
  fi
  install_missing ${users:+users}
  down_quiet
  mkdir -p "$dir"
  ssh-keygen -q -t ed25519 -N '' -C ferry-e2e -f "$dir/id_ed25519"
  cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
  : >"$dir/known_hosts"
  : >"$dir/hosts"

  ip link add "$bridge" type bridge
  ip addr add "$net.1/24" dev "$bridge"
  ip link set "$bridge" up
  # hosts talk to each other across the bridge; a Docker on this machine sets
  # the FORWARD policy to DROP, and bridged frames pass through it
  if command -v iptables >/dev/null; then
    iptables -w -I FORWARD -i "$bridge" -o "$bridge" -j ACCEPT
  fi

  local i
  for i in $(seq "$n"); do
    local name h="$dir/h$i" a v
    name=$(ns "$i")
    v=$(veth "$i")
    a=$(addr "$i")
    mkdir -p "$h"
    ip netns add "$name"
    ip link add "$v" type veth peer name "${v%b}n"
    ip link set "$v" master "$bridge" up
    ip link set "${v%b}n" netns "$name"
    ip -n "$name" link set "${v%b}n" name eth0
    ip -n "$name" addr add "$a/24" dev eth0
    ip -n "$name" link set eth0 up
    ip -n "$name" link set lo up

    # dockerd first: it takes the longest; all of them start at once.
    start_dockerd "$i"

    configure_sshd "$i"
    echo "$name $a $v" >>"$dir/hosts"
    start_sshd "$i"
  done
  [ -z "$behind" ] || up_behind "$behind"
  [ -z "$users" ] || add_users

  local all; all=$(seq "$n")
  [ -z "$behind" ] || all="$all ${behind}b"
  for i in $all; do wait_sshd "$i" 20; done

  local deadline=$((SECONDS + 45))
  for i in $all; do
    until docker -H "unix:///run/$(ns "$i")-docker.sock" info >/dev/null 2>&1; do
      [ $SECONDS -lt $deadline ] || { tail -20 "$dir/h$i/dockerd.log" >&2; die "dockerd of $(ns "$i") did not answer"; }
      sleep 0.2
    done
  done
  printf 'FERRY_E2E_HOSTS=%s\nFERRY_NET=%s\n' "$dir" "$netid" >"$dir/env"
  say "$n hosts up${behind:+, one behind host $behind}${users:+, users $sudo_user and $plain_user} in ${SECONDS}s; known_hosts:"
  cat "$dir/known_hosts" >&2
  echo "$dir"
}

# Host `Jb`: a namespace linked to host J's namespace only.
up_behind() {
  local j=$1 id="$1b" name a h="$dir/h$1b" v="f${netid}h$1b"
  name=$(ns "$id")
  a=$(addr "$id")
  mkdir -p "$h"
  ip netns add "$name"
  ip link add "${v}j" type veth peer name "${v}n"
  ip link set "${v}j" netns "$(ns "$j")"
  ip link set "${v}n" netns "$name"
  ip -n "$(ns "$j")" addr add "10.$netid.$j.1/24" dev "${v}j"
  ip -n "$(ns "$j")" link set "${v}j" up
  ip -n "$name" link set "${v}n" name eth0
  ip -n "$name" addr add "$a/24" dev eth0
  ip -n "$name" link set eth0 up
  ip -n "$name" link set lo up
  start_dockerd "$id"
  configure_sshd "$id"
  echo "$name $a $j" >"$dir/behind"
  start_sshd "$id"
}

add_users() {
  local u
  for u in "$sudo_user" "$plain_user"; do
    id "$u" >/dev/null 2>&1 && userdel -f "$u" 2>/dev/null
    # `*`, not the default `!`: sshd without PAM refuses locked accounts, even with a key
    useradd -M -d /nonexistent -s /bin/sh -p '*' "$u"
  done
  printf '%s ALL=(root) NOPASSWD: ALL\n' "$sudo_user" >"$sudoers.tmp"
  chmod 0440 "$sudoers.tmp"
  visudo -cqf "$sudoers.tmp" || die "the sudoers drop-in does not parse"
  mv "$sudoers.tmp" "$sudoers"
  printf '%s sudo\n%s none\n' "$sudo_user" "$plain_user" >"$dir/users"
}

down_quiet() {
  local h i files=()
  for h in "$dir"/h*; do
    [ -d "$h" ] || continue
    files+=("$h/sshd.pid" "$h/docker.pid" "$h/dockerd.shell")
  done
  stop_pidfiles "${files[@]}"
  for h in "$dir"/h*; do
    [ -d "$h" ] || continue
    i=${h##*/h}
    rm -f "/run/$(ns "$i")-docker.sock"
  done
  for ns in $(ip netns list 2>/dev/null | awk -v p="ferry$netid-h" 'index($1, p) == 1 {print $1}'); do
    ip netns del "$ns"
  done
  ip link del "$bridge" 2>/dev/null || true
  if command -v iptables >/dev/null; then
    while iptables -w -D FORWARD -i "$bridge" -o "$bridge" -j ACCEPT 2>/dev/null; do :; done
  fi
  rm -f "$sudoers"
  local u
  for u in "$sudo_user" "$plain_user"; do
    if id "$u" >/dev/null 2>&1; then userdel -f "$u" 2>/dev/null || true; fi
  done
  if [ -d "$dir" ]; then
    # dockerd unmounts its layers when it stops; anything left would block rm.
    awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf "$dir"
  fi
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down_quiet; say "down" ;;
  sshd-stop) stop_pidfiles "$dir/h${2:?host number}/sshd.pid" ;;
  sshd-start) start_sshd "${2:?host number}"; wait_sshd "$2" 20 ;;
  *) die "usage: hosts.sh up N [--behind J] [--users] | down | sshd-stop I | sshd-start I" ;;
esac
