#!/usr/bin/env bash
# The default image builds to images/spark/image.digest on other Debian
# releases than this machine's: for each suite (default: bookworm trixie),
# a minbase rootfs made with debootstrap from the host's own Debian mirror,
# with only what a fresh install of that release has plus what ferry needs
# at run time (ca-certificates, python3 with pip, setuptools and wheel, the
# shared libraries target/debug/ferry links), runs `ferry build` of
# images/spark with an empty FERRY_CACHE inside a chroot, and the digest is
# compared with the committed one. One line per suite: suite, build time,
# digest, OK or MISMATCH; exits nonzero on any mismatch or failure.
#
# Needs root, and target/debug/ferry built (`cargo build`). The rootfs is
# cached as tarballs under ${FERRY_TEST_CACHE:-~/.cache/ferry-tests}/rootfs
# (SUITE.tar: debootstrap's minbase; SUITE-deps-HASH.tar: with the packages
# installed), so a second run installs nothing. The mirrors come from the
# host's apt sources (its first Debian entry, and its -security entry);
# FERRY_TEST_DEBIAN_MIRROR and FERRY_TEST_DEBIAN_SECURITY override them.
# FERRY_DEBIAN_MIRROR, PIP_* and proxy variables pass through to the build.
#
#   bash tests/rootfs-e2e.sh                 # bookworm trixie
#   bash tests/rootfs-e2e.sh trixie
#   bash tests/rootfs-e2e.sh --sources trixie  # only print its apt sources
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${FERRY_TEST_CACHE:-$HOME/.cache/ferry-tests}/rootfs
ferry=$repo/target/debug/ferry
self=$repo/tests/rootfs-e2e.sh

# --- the host's Debian mirrors ----------------------------------------------
# One line per enabled `deb` entry of the host's apt sources, in the order
# apt reads them: "URI SUITE...".
apt_entries() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENT...
    awk '{ sub(/#.*/, "") } $1 == "deb" {
      i = 2
      if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      if (i + 1 <= NF) print $i, $(i + 1)
    }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas: Types, URIs, Suites, Enabled (blank lines between)
    awk 'function flush() {
        if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no")
          for (j = 1; j <= nu; j++) print u[j], suites
        types = ""; suites = ""; enabled = ""; nu = 0
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      { key = tolower($1); $1 = ""; sub(/^ +/, "") }
      key == "types:" { types = $0 }
      key == "suites:" { suites = $0 }
      key == "enabled:" { enabled = $0 }
      key == "uris:" { nu = split($0, u, " ") }
      END { flush() }' "$f"
  done
}
codenames=" buzz rex bo hamm slink potato woody sarge etch lenny squeeze wheezy jessie stretch buster bullseye bookworm trixie forky duke sid "
is_debian_suite() { [[ "$codenames" == *" ${1%%-*} "* ]]; }
# The URI of the first entry whose suites are all Debian codenames, the
# first with a -security suite when $1 is "security", the first without
# one otherwise.
debian_uri() {
  local want=$1 uri suites s ok security
  while read -r uri suites; do
    ok=1 security=0
    for s in $suites; do
      is_debian_suite "$s" || ok=0
      [[ $s == *-security ]] && security=1
    done
    [ $ok = 1 ] || continue
    if { [ "$want" = security ] && [ $security = 1 ]; } || { [ "$want" = main ] && [ $security = 0 ]; }; then
      echo "${uri%/}"
      return
    fi
  done < <(apt_entries)
}

# Sets `main` and `security`: the Debian mirror and its security archive.
mirrors() {
  main=${FERRY_TEST_DEBIAN_MIRROR:-$(debian_uri main)}
  security=${FERRY_TEST_DEBIAN_SECURITY:-$(debian_uri security)}
  if [ -z "$main" ]; then
    echo "error: no Debian entry in this machine's apt sources: set FERRY_TEST_DEBIAN_MIRROR (and FERRY_TEST_DEBIAN_SECURITY) to a Debian mirror's URI" >&2
    exit 1
  fi
}

# --- running something inside a rootfs --------------------------------------
# The mounts live in a mount namespace of their own, so they end with the
# command, whatever happens to it or to this script.
in_root() {
  local root=$1
  shift
  # shellcheck disable=SC2016 # the script expands its own arguments
  unshare --mount --fork -- sh -c '
    set -e
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --rbind /sys "$root/sys"
    exec chroot "$root" "$@"' sh "$root" "$@"
}
# The host's name resolution, its local CA certificates and pip's
# configuration: what a machine on this network would have.
host_config() {
  local root=$1
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$root/etc/pip.conf"; fi
  if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
    cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
    if [ -x "$root/usr/sbin/update-ca-certificates" ]; then
      in_root "$root" update-ca-certificates >/dev/null
    fi
  fi
}

# The version apt would install of package $2 in rootfs $1, empty when none
# (an unknown or a purely virtual package).
candidate() {
  in_root "$1" apt-cache policy "$2" | awk '$1 == "Candidate:" && $2 != "(none)" { print $2 }'
}

# The deb822 apt sources a fresh install of suite $1 has: $1 and $1-updates
# from mirror $2, $1-security from mirror $3 (left out when $3 is empty).
debian_sources() {
  local suite=$1 main=$2 security=$3
  printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$main" "$suite" "$suite"
  if [ -n "$security" ]; then
    printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$security" "$suite"
  else
    echo "NOTICE: no -security entry in this machine's apt sources: the $suite rootfs has no $suite-security" >&2
  fi
}

# --- one suite --------------------------------------------------------------
one_suite() {
  local suite=$1
  mirrors
  mkdir -p "$cache"
  local tmp
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-rootfs-$suite.XXXXXX")
  # the mounts are gone with their namespace; --one-file-system guards the
  # host's /dev and /sys even so. A tarball being written is removed: only
  # a complete one is renamed into the cache. (The trap runs after this
  # function has returned: the paths are expanded now.)
  # shellcheck disable=SC2064
  trap "$(printf 'rm -rf --one-file-system %q; rm -f %q %q' "$tmp" "$cache/.$suite.tar.$$" "$cache/.$suite-deps.tar.$$")" EXIT
  local root=$tmp/root
  mkdir "$root"
  local t

  # debootstrap's minbase, as it is (tests/fresh-demo.sh starts from it)
  local base=$cache/$suite.tar
  if [ ! -f "$base" ]; then
    t=$SECONDS
    echo "== $suite: debootstrap --variant=minbase $suite from $main"
    if ! unshare --mount --fork -- debootstrap --variant=minbase "$suite" "$root" "$main" >"$tmp/debootstrap.log" 2>&1; then
      tail -20 "$tmp/debootstrap.log" >&2
      echo "error: debootstrap of $suite failed (log above)" >&2
      return 1
    fi
    tar --numeric-owner --xattrs -C "$root" -cf "$cache/.$suite.tar.$$" .
    mv -f "$cache/.$suite.tar.$$" "$base"
    echo "== $suite: minbase rootfs made in $((SECONDS - t))s → $base"
    rm -rf --one-file-system "$root" && mkdir "$root"
  fi

  # the sources a fresh install of the release has, and ferry's run-time needs
  local sources
  sources=$(debian_sources "$suite" "$main" "$security")
  # the packages holding the shared libraries ferry links, as this machine
  # names them (the rootfs may name them otherwise: libssl3 is libssl3t64
  # from trixie on)
  local libs
  libs=$(ldd "$ferry" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
    while read -r lib; do
      # the multiarch folder and the name: /lib or /usr/lib is the same file
      dir=${lib%/*}
      dpkg -S "*/${dir##*/}/${lib##*/}" 2>/dev/null | sed -n '1s/[:,].*//p'
    done | sort -u | tr '\n' ' ')
  local want="ca-certificates python3 python3-pip python3-setuptools python3-wheel $libs"
  local key
  key=$(printf '%s\n%s\n' "$want" "$sources" | sha256sum | cut -c1-12)
  local deps=$cache/$suite-deps-$key.tar
  if [ ! -f "$deps" ]; then
    tar --numeric-owner --xattrs -C "$root" -xpf "$base"
    printf '%s\n' "$sources" >"$root/etc/apt/sources.list.d/debian.sources"
    rm -f "$root/etc/apt/sources.list"
    host_config "$root"
    t=$SECONDS
    echo "== $suite: installing $want"
    in_root "$root" apt-get update -qq >"$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log" >&2; return 1; }
    local pkgs=() p
    for p in $want; do
      # a library package renamed in this release (the 64-bit time_t
      # transition added `t64`): install it under its new name
      if [ -n "$(candidate "$root" "$p")" ]; then
        pkgs+=("$p")
      elif [ -n "$(candidate "$root" "${p}t64")" ]; then
        pkgs+=("${p}t64")
      else
        echo "error: $suite has no package \`$p\` (nor \`${p}t64\`)" >&2
        return 1
      fi
    done
    # without recommends: what ferry needs, not what pip suggests (a compiler)
    if ! in_root "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$tmp/apt.log" 2>&1; then
      tail -20 "$tmp/apt.log" >&2
      echo "error: installing ${pkgs[*]} in $suite failed (log above)" >&2
      return 1
    fi
    in_root "$root" apt-get clean
    echo "== $suite: installed ${pkgs[*]} in $((SECONDS - t))s"
    rm -f "$cache/$suite"-deps-*.tar
    tar --numeric-owner --xattrs -C "$root" -cf "$cache/.$suite-deps.tar.$$" .
    mv -f "$cache/.$suite-deps.tar.$$" "$deps"
  else
    tar --numeric-owner --xattrs -C "$root" -xpf "$deps"
  fi
  host_config "$root"
  cp "$ferry" "$root/usr/local/bin/ferry"
  local missing
  missing=$(in_root "$root" ldd /usr/local/bin/ferry | awk '/not found/ { print $1 }' | tr '\n' ' ')
  if [ -n "$missing" ]; then
    echo "error: in the $suite rootfs, ferry does not find ${missing}" >&2
    return 1
  fi
  # today's `ferry build` downloads .debs with apt: current package lists,
  # as on a machine whose apt is kept up to date
  in_root "$root" apt-get update -qq >"$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log" >&2; return 1; }

  mkdir -p "$root/work/images" "$root/var/cache/ferry-empty"
  cp -r images/spark "$root/work/images/spark"
  local envs=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
    FERRY_CACHE=/var/cache/ferry-empty)
  local v
  for v in $(compgen -e); do
    case $v in
      PIP_* | FERRY_DEBIAN_MIRROR | http_proxy | https_proxy | no_proxy | HTTP_PROXY | HTTPS_PROXY | NO_PROXY) envs+=("$v=${!v}") ;;
    esac
  done
  t=$SECONDS
  local rc=0
  in_root "$root" env -i "${envs[@]}" ferry build /work/images/spark/image.toml --out /tmp/spark --json \
    >"$tmp/build.json" 2>"$tmp/build.err" || rc=$?
  local took=$((SECONDS - t))
  local digest expected
  expected=$(cat images/spark/image.digest)
  digest=$(sed -n 's/^ *"manifest_digest": "\(sha256:[0-9a-f]*\)".*/\1/p' "$tmp/build.json")
  if [ $rc != 0 ] || [ -z "$digest" ]; then
    # ferry names every pin it could not fetch on one line: a few thousand characters
    tail -n 20 "$tmp/build.err" | cut -c1-1500 >&2
    printf '%-9s build %4ss  %-71s  FAILED (exit %s)\n' "$suite" "$took" "-" "$rc"
    return 1
  fi
  if [ "$digest" = "$expected" ]; then
    printf '%-9s build %4ss  %s  OK\n' "$suite" "$took" "$digest"
  else
    printf '%-9s build %4ss  %s  MISMATCH (expected %s)\n' "$suite" "$took" "$digest" "$expected"
    return 1
  fi
}

# a signal ends the script through its EXIT trap (bash does not run that
# trap when a signal kills it)
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
if [ "${1:-}" = "--one" ]; then
  one_suite "$2"
  exit
fi
# tests/fresh-demo.sh writes the same sources into its machine
if [ "${1:-}" = "--sources" ]; then
  mirrors
  debian_sources "$2" "$main" "$security"
  exit
fi

if [ "$(id -u)" != 0 ]; then
  echo "error: tests/rootfs-e2e.sh needs root (debootstrap, chroot, mounts): run it with sudo" >&2
  exit 1
fi
if [ ! -x "$ferry" ]; then
  echo "error: \`$ferry\` is missing: run \`cargo build\` first" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "== installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
# one run at a time: a second one would extract, replace and remove the
# same cached tarballs (CI and a developer on one machine)
mkdir -p "$cache"
exec 9>"$cache/.lock"
if ! flock -n 9; then
  echo "== waiting for another tests/rootfs-e2e.sh run (lock: $cache/.lock, at most 1 hour)"
  flock -w 3600 9 || { echo "error: another tests/rootfs-e2e.sh run held $cache/.lock for an hour" >&2; exit 1; }
fi
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)
failed=()
# each suite in a process of its own: `set -e` holds in it, and its trap
# cleans up its own temp folder
for s in "${suites[@]}"; do
  bash "$self" --one "$s" || failed+=("$s")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "rootfs-e2e: failed: ${failed[*]}" >&2
  exit 1
fi
echo "rootfs-e2e: passed (${suites[*]})"
