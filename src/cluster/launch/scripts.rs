//! The constant shell scripts the launcher runs on hosts. Values reach them
//! only as positional parameters (see [`crate::ssh::script`]); none is ever
//! built from data.

/// `NAME...`: a line `NAME SPEC RUNNING` (or `NAME missing`) for each.
pub(super) const SURVEY_SH: &str = r#"for n in "$@"; do
  printf '%s ' "$n"
  docker container inspect --format '{{index .Config.Labels "ferry.spec"}} {{.State.Running}}' -- "$n" 2>/dev/null || echo missing
done"#;

/// `NAME`: starts the container.
pub(super) const START_SH: &str = r#"docker start -- "$1" >/dev/null"#;

/// `NAME`: restarts the container.
pub(super) const RESTART_SH: &str = r#"docker restart --time 10 -- "$1" >/dev/null"#;

/// `NAME`: stops and removes the container, if there is one.
pub(super) const REMOVE_SH: &str = r#"docker stop --time 30 -- "$1" >/dev/null 2>&1; docker rm --force -- "$1" >/dev/null 2>&1; true"#;

/// `NAME`: SIGPWR to a running container (a Spark worker decommissions);
/// prints `yes` if it was running.
pub(super) const DECOMMISSION_SH: &str = r#"if [ "$(docker inspect --format '{{.State.Running}}' -- "$1" 2>/dev/null)" = true ]; then docker kill --signal PWR -- "$1" >/dev/null && echo yes; fi"#;

/// `NAME`: SIGKILLs the container's process from the host, as a crash would.
pub(super) const KILL_SH: &str = r#"pid=$(docker inspect --format '{{.State.Pid}}' -- "$1") && [ "$pid" -gt 0 ] && kill -KILL "$pid""#;

/// `PATH`: the file's content, or nothing.
pub(super) const READ_SH: &str = r#"cat -- "$1" 2>/dev/null || true"#;

/// `FILTER`: a line `NAME<tab>STATE<tab>SPEC` per container the filter matches.
pub(super) const STATUS_SH: &str =
    "docker ps --all --filter \"$1\" --format '{{.Names}}\t{{.State}}\t{{.Label \"ferry.spec\"}}'";

/// `TAIL NAME FOLLOW`: the container's log (`FOLLOW` 1: as it grows).
pub(super) const LOGS_SH: &str = r#"if [ "$3" = 1 ]; then exec docker logs --tail "$1" --follow -- "$2" 2>&1; fi
exec docker logs --tail "$1" -- "$2" 2>&1"#;

/// Functions both `up` and `down --purge` use. `$state` is the cluster's
/// folder of ferry's own (under [`STATE_ROOT`](super::STATE_ROOT)), `$trusted_record` is set
/// when that folder is root's alone (a record anyone else could write is
/// not believed).
///
/// `root_only DIR`: a real folder (no link) of ours that no one else may
/// write in. `in_record FILE PATH`: whether FILE lists PATH on a line.
/// `made PATH`: whether the cluster's record says its `up` made PATH.
/// `steady PATH`: every folder holding a name on the way to PATH (PATH
/// itself not: it may be a container's) is root's and only root may
/// change its entries, or is sticky (`/tmp`) with the name below it root's;
/// else `bad` is the first that is not. So no one else can swap a name on
/// the way for a link between `up`'s checks and its writes.
pub(super) const RECORDS_SH: &str = r#"nl='
'
me=$(id -u)
fail() { printf '%s\n' "$1" >&2; exit 1; }
root_only() {
  [ -d "$1" ] && [ ! -L "$1" ] || return 1
  _st=$(stat -c '%u %a' -- "$1") || return 1
  [ "${_st% *}" = "$me" ] && [ $((0${_st#* } & 022)) = 0 ]
}
in_record() {
  [ -f "$1" ] && [ ! -L "$1" ] || return 1
  while IFS= read -r _l; do [ "$_l" = "$2" ] && return 0; done < "$1"
  return 1
}
made() { [ -n "$trusted_record" ] && in_record "$state/made" "$1"; }
steady() {
  _h=/ _r=${1#/}
  while [ -n "$_r" ]; do
    _p=${_h%/}/${_r%%/*}
    case $_r in */*) _r=${_r#*/} ;; *) _r= ;; esac
    bad=$_h
    _st=$(stat -c '%u %a' -- "$_h") || return 1
    case ${_st% *} in 0|"$me") ;; *) return 1 ;; esac
    if [ $((0${_st#* } & 022)) != 0 ]; then
      [ $((0${_st#* } & 01000)) != 0 ] && [ -d "$_p" ] && [ ! -L "$_p" ] || return 1
      case $(stat -c %u -- "$_p") in 0|"$me") ;; *) return 1 ;; esac
    fi
    [ -e "$_p" ] || return 0
    _h=$_p
  done
}
"#;

/// `up`'s folder and file steps.
///
/// `no_foreign_link PATH`: no link on the way to PATH (PATH included) that
/// someone else than root could have made (a link of root's in a folder of
/// root's alone, `/data -> /mnt/disk1`, is the admin's and is followed).
/// `owner_ids USER`: sets `uid` and `gid` to those of the image's USER,
/// asked of the image itself (the user is a value for its `id`, never
/// part of a program), never pulled, its answer read to 64 bytes at most;
/// uid 0 is refused (a container of root's would own its folders as root,
/// and the links it plants there would pass for the admin's).
/// `mk PATH MODE OWNER OWN`: makes a missing folder, records it as the
/// cluster's and gives it to its owner; a folder that was there and is not
/// the cluster's (`OWN` is 1 in the cluster's own folders) keeps its mode
/// and owner, and its owner must be able to write it.
/// `writable PATH UID GID`: whether that user may make files in it, by
/// owner, group and mode (ACLs and other groups are not read).
/// `stage_for DIR`: sets `at` to a folder of root's alone on DIR's file
/// system, so that a rename from it into DIR is atomic.
/// `put NAME PATH MODE OWNED`: puts the tar's file NAME at PATH when its
/// content differs: copied into the stage, given its mode (and with
/// `OWNED` 1 its folder's owner) there, then renamed into place. A rename
/// replaces a link a container planted at PATH; nothing is ever written,
/// chmodded or chowned through one.
/// `mv_t`: whether this host's `mv` has `-T` (busybox's may not), asked
/// once, of a file in the stage. Without it, a link to a folder planted
/// between `put`'s check and its `mv` would take the staged file into that
/// folder (a new file of root's, never an overwrite): `-T` closes that.
pub(super) const MK_SH: &str = r#"no_foreign_link() {
  _p= _r=${1#/}
  while [ -n "$_r" ]; do
    _p=$_p/${_r%%/*}
    case $_r in */*) _r=${_r#*/} ;; *) _r= ;; esac
    if [ -L "$_p" ]; then
      [ "$(stat -c %u -- "$_p")" = "$me" ] && root_only "${_p%/*}/" || return 1
    fi
  done
}
owner_ids() {
  case $1 in
    ""|[!abcdefghijklmnopqrstuvwxyz_]*|*[!abcdefghijklmnopqrstuvwxyz0123456789_-]*)
      fail "the image's user \`$1\` is not a user name ([a-z_][a-z0-9_-]*): check the image's \`ferry.*.user\` labels" ;;
  esac
  [ "$1" = "${ids_of-}" ] && return 0
  _ids=$(docker run --rm --pull=never --network none --entrypoint sh -- "$image" -c 'id -u -- "$1" && id -g -- "$1"' sh "$1" | head -c 64)
  case $_ids in *"$nl"*) ;; *) fail "cannot read the user \`$1\` of the image \`$image\`" ;; esac
  uid=${_ids%%"$nl"*} gid=${_ids#*"$nl"}
  case $uid in ""|*[!0123456789]*) fail "user \`$1\` is not in the image \`$image\`" ;; esac
  case $gid in ""|*[!0123456789]*) fail "user \`$1\` is not in the image \`$image\`" ;; esac
  [ "$uid" != 0 ] || fail "the image's user \`$1\` is uid 0 (root) in the image \`$image\`: ferry gives no folder to root; name a user of its own in the image's \`ferry.spark.user\` or \`ferry.zookeeper.user\` label"
  ids_of=$1
}
writable() {
  _st=$(stat -c '%u %g %a' -- "$1") || return 1
  set -- "$2" "$3" $_st
  _m=$((0$5))
  if [ "$1" = "$3" ]; then _b=$((_m >> 6)); elif [ "$2" = "$4" ]; then _b=$((_m >> 3)); else _b=$_m; fi
  [ $((_b & 3)) = 3 ]
}
mk() {
  case $1 in /*) ;; *) fail "\`$1\` is not an absolute path" ;; esac
  case $1 in *"$nl"*) fail "a planned folder's path holds a newline" ;; esac
  case "$state/" in "${1%/}/"*) fail "\`$1\` would hold ferry's own records of the cluster (\`$state\`), which no container may write: name another folder" ;; esac
  no_foreign_link "$1" || fail "\`$1\`: a link on its way was made by another user than root (a container may have planted it): ferry follows no such link"
  steady "$1" || fail "\`$1\`: \`$bad\` on its way is not root's alone (others may change its entries, and swap one for a link): make it root's with mode 0755, or name a folder elsewhere"
  if [ -L "$1" ] || { [ -e "$1" ] && [ ! -d "$1" ]; }; then
    fail "\`$1\` is a link or not a folder: ferry makes and writes only real folders"
  fi
  if [ ! -e "$1" ]; then
    [ "$3" = root ] || owner_ids "$3"
    mkdir -p -- "$1" || exit 1
    in_record "$state/made" "$1" || printf '%s\n' "$1" >> "$state/made" || exit 1
    if [ "$3" != root ]; then
      chown -h -- "$uid:$gid" "$1" || exit 1
    fi
  elif [ "$4" != 1 ] && ! made "$1"; then
    [ "$3" = root ] && return 0
    owner_ids "$3"
    writable "$1" "$uid" "$gid" || fail "\`$1\` was not made by ferry and the image's user \`$3\` (uid $uid) cannot write it: give it to that user (\`chown $uid:$gid $1\` there) or name a folder that does not exist yet (ferry makes it)"
    return 0
  fi
  chmod -- "$2" "$1" || exit 1
}
stage_for() {
  _dev=$(stat -c %d -- "$1") || exit 1
  at=$stage
  [ "$(stat -c %d -- "$at")" = "$_dev" ] && return 0
  # its file system's top: the highest folder above it on the same device
  _top=$1
  while [ "$_top" != / ]; do
    _up=${_top%/*}
    [ -n "$_up" ] || _up=/
    [ "$(stat -c %d -- "$_up")" = "$_dev" ] || break
    _top=$_up
  done
  at=${_top%/}/.ferry-stage
  root_only "$_top" && { [ -d "$at" ] || mkdir -m 0700 -- "$at"; } && root_only "$at" && [ "$(stat -c %d -- "$at")" = "$_dev" ] ||
    fail "\`$1\` is on another file system than \`$stage\`, and that file system's top folder \`$_top\` is not root's alone, so ferry has nowhere safe to stage its files there: put the folder on the same file system as \`$stage\`, or below a mount point only root writes"
}
mv_t() {
  if [ -z "${_mv_t-}" ]; then
    _a=$(mktemp -- "$at/probe.XXXXXX") || exit 1
    if mv -fT -- "$_a" "$_a.T" 2>/dev/null; then _mv_t=1; rm -f -- "$_a.T"; else _mv_t=0; rm -f -- "$_a"; fi
  fi
  [ "$_mv_t" = 1 ]
}
put() {
  case $2 in /*) ;; *) fail "\`$2\` is not an absolute path" ;; esac
  _d=${2%/*}
  [ -n "$_d" ] || _d=/
  no_foreign_link "$_d" && [ -d "$_d" ] && [ ! -L "$_d" ] || fail "\`$2\`: its folder is missing or a link: ferry writes through no link a container could have planted"
  steady "$_d" || fail "\`$2\`: \`$bad\` on its way is not root's alone (others may change its entries, and swap one for a link): make it root's with mode 0755, or name a folder elsewhere"
  if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s -- "$x/$1" "$2"; then return 0; fi
  stage_for "$_d"
  tmp=$(mktemp -- "$at/put.XXXXXX") || exit 1
  cat -- "$x/$1" > "$tmp" && chmod -- "$3" "$tmp" || exit 1
  if [ "$4" = 1 ]; then
    _own=$(stat -c %u:%g -- "$_d") && chown -- "$_own" "$tmp" || exit 1
  fi
  # a plain `mv` moves into a folder (or a link to one) at the target
  [ ! -d "$2" ] || fail "\`$2\` is a folder or a link to one: ferry puts a file there only in place of a file or a link"
  if mv_t; then mv -fT -- "$tmp" "$2" || exit 1; else mv -f -- "$tmp" "$2" || exit 1; fi
  tmp=
  printf 'wrote %s\n' "$2"
}
"#;

/// `up`'s files step: `STATE IMAGE` then records `dir PATH MODE OWNER OWN`,
/// `file NAME PATH MODE`, `secret NAME PATH MODE` (owned like its folder),
/// with the tar of the files' contents on stdin.
pub(super) const UP_FILES_HEAD: &str = r#"set -u
umask 022
state=$1 image=$2
shift 2
stage=$state/.stage"#;

pub(super) const UP_FILES_STEPS: &str = r#"mkdir -p -- "$state" && root_only "$state" ||
  fail "\`$state\` (ferry's own records of the cluster) is a link, or others than root may write it: make it a folder of root's, mode 0755"
trusted_record=1
{ [ -d "$stage" ] || mkdir -m 0700 -- "$stage"; } && root_only "$stage" && chmod 0700 -- "$stage" ||
  fail "\`$stage\` (where ferry stages files) is a link, or others than root may write it"
tmp=
x=$(mktemp -d -- "$stage/in.XXXXXX") || exit 1
trap 'rm -rf -- "$x"; [ -z "$tmp" ] || rm -f -- "$tmp"' EXIT
tar -xf - -C "$x" || exit 1
while [ $# -gt 0 ]; do
  case $1 in
    dir) mk "$2" "$3" "$4" "$5"; shift 5 ;;
    file) put "$2" "$3" "$4" 0; shift 4 ;;
    secret) put "$2" "$3" "$4" 1; shift 4 ;;
    *) fail "unknown step \`$1\`" ;;
  esac
done
"#;

/// `NAME SPEC N PORT... RUN-ARG...`: brings the container to its planned
/// spec (its `ferry.spec` label), printing one line: unchanged, started, or
/// replaced; `docker` gets the run arguments as they are. Before it starts
/// the container (created, restarted or replaced), none of its N planned
/// host ports may be listened on (the host's /proc/net/tcp and tcp6): a
/// port held by another program, or by another cluster on the same host,
/// would answer the gates in this container's place. The ports are
/// checked to be digits before they are used.
pub(super) const ENSURE_SH: &str = r#"set -u
name=$1 want=$2 n=$3
shift 3
ports=
while [ "$n" -gt 0 ]; do
  case $1 in ''|*[!0-9]*) echo "ensure: a port is not a number" >&2; exit 2 ;; esac
  ports="$ports $1"
  shift
  n=$((n - 1))
done
free() {
  for port in $ports; do
    hex=$(printf '%04X' "$port")
    for table in /proc/net/tcp /proc/net/tcp6; do
      [ -r "$table" ] || continue
      while read -r _ local _ st _; do
        if [ "$st" = 0A ] && [ "${local##*:}" = "$hex" ]; then
          printf 'port %s is already in use on this host (by another program or another cluster, not by %s): free it, or give this cluster other ports\n' "$port" "$name" >&2
          return 1
        fi
      done < "$table"
    done
  done
}
found=$(docker container inspect --format '{{index .Config.Labels "ferry.spec"}} {{.State.Running}}' -- "$name" 2>/dev/null) || found=
case $found in
  "$want true") printf '%s is up to date\n' "$name" ;;
  "$want false") free || exit 1; docker start -- "$name" >/dev/null || exit 1; printf '%s was stopped: started it\n' "$name" ;;
  "") free || exit 1; docker "$@" >/dev/null || exit 1; printf 'started %s\n' "$name" ;;
  *) docker stop --time 30 -- "$name" >/dev/null 2>&1; docker rm --force -- "$name" >/dev/null && free && docker "$@" >/dev/null || exit 1; printf '%s: spec changed, replaced it\n' "$name" ;;
esac"#;

/// `TAIL NAME...`: the last lines of each container's log.
pub(super) const LOGS_TAIL_SH: &str = r#"tail=$1
shift
for n in "$@"; do
  printf '%s\n' "--- last lines of $n:"
  docker logs --tail "$tail" -- "$n" 2>&1
done"#;

/// `DRIVER LABEL USER IMAGE SECRET VAR INSIDE CMD...`: runs the driver's
/// container. With a `SECRET` file (its `VAR=` line is the secret), the
/// driver gets the secret as a property (Spark requires
/// `spark.authenticate.secret` for a standalone driver): a 0600 file of the
/// image's user, written with the shell's builtin printf so it is in no
/// process's arguments. With `INSIDE`, the job comes on stdin and is
/// mounted there.
pub(super) const SUBMIT_SH: &str = r#"set -u
exec 2>&1
driver=$1 label=$2 user=$3 image=$4 secret=$5 var=$6 inside=$7
shift 7
d=$(mktemp -d /tmp/ferry-submit.XXXXXX) || exit 1
trap 'rm -rf -- "$d"' EXIT
chmod 0711 "$d"
set -- -- "$image" "$@"
if [ -n "$inside" ]; then
  cat > "$d/job" || exit 1
  chmod 0644 "$d/job"
  set -- --volume "$d/job:$inside:ro" "$@"
fi
if [ -n "$secret" ]; then
  v=
  while IFS= read -r l; do
    case $l in "$var="*) v=${l#*=} ;; esac
  done < "$secret"
  (umask 077; printf 'spark.authenticate true\nspark.authenticate.secret %s\n' "$v" > "$d/auth.conf") || exit 1
  chown -- "$(stat -c %u:%g -- "$secret")" "$d/auth.conf" || exit 1
  set -- --volume "$d/auth.conf:/etc/ferry/submit/auth.conf:ro" "$@"
fi
docker run --rm --name "$driver" --label "$label" --network host --user "$user" "$@"
"#;

/// `FILTER FILTER`: stops the containers both label filters match, all at
/// once (Docker prints hexadecimal ids: split, never globbed).
pub(super) const STOP_ROLE_SH: &str = r#"ids=$(docker ps --quiet --filter "$1" --filter "$2") || exit 1
set -f
if [ -n "$ids" ]; then docker stop --time 30 -- $ids >/dev/null || exit 1; fi"#;

/// `down`'s script after the containers stopped: `ROOT CLUSTER FILTER
/// FILTER` (the clusters' and the drivers' label filters) remove the
/// cluster's containers (and drivers `ferry submit` left behind), printing
/// their names; then records, with `--purge`: `purge PATH HERE` removes a
/// folder the cluster's record says its `up` made, and says why it keeps one
/// the plan has on this host (`HERE` is 1) that it did not; `own PATH`
/// removes a folder of the cluster's own; `tidy` drops from the record what
/// is gone, and the stage; `rmdir PATH` removes an empty folder.
pub(super) const DOWN_HEAD: &str = r#"set -u
root=$1 c=$2
names=$(docker ps --all --filter "$3" --format '{{.Names}}'; docker ps --all --filter "$4" --format '{{.Names}}') || exit 1
shift 4
# container names are Docker's ([a-zA-Z0-9][a-zA-Z0-9_.-]*): split, never globbed
set -f
if [ -n "$names" ]; then docker rm --force -- $names >/dev/null || exit 1; fi
for n in $names; do printf '%s\n' "$n"; done
set +f
[ $# -gt 0 ] || exit 0
state=$root/$c"#;

pub(super) const PURGE_SH: &str = r#"trusted_record=
root_only "$state" && trusted_record=1
purge() {
  [ -e "$1" ] || [ -L "$1" ] || return 0
  if made "$1" && ! steady "$1"; then
    printf 'kept %s: `%s` on its way is not root'"'"'s alone (others may change its entries, and swap one for a link)\n' "$1" "$bad"
  elif made "$1"; then
    rm -rf -- "$1" && printf '%s\n' "$1"
  elif [ "$2" = 1 ]; then
    by=
    for r in "$root"/*/made; do
      [ "$r" = "$state/made" ] && continue
      root_only "${r%/made}" && in_record "$r" "$1" && { by=${r%/made}; by=${by##*/}; break; }
    done
    if [ -n "$by" ]; then
      printf 'kept %s: cluster `%s` made it, not `%s`\n' "$1" "$by" "$c"
    else
      printf 'kept %s: it was there before ferry (ferry has no record of making it), so what the cluster wrote in it stays too\n' "$1"
    fi
  fi
}
tidy() {
  [ -n "$trusted_record" ] || return 0
  rm -rf -- "$state/.stage"
  [ -f "$state/made" ] || return 0
  while IFS= read -r _l; do
    if [ -e "$_l" ] || [ -L "$_l" ]; then printf '%s\n' "$_l"; fi
  done < "$state/made" > "$state/made.new" || exit 1
  if [ -s "$state/made.new" ]; then mv -f -- "$state/made.new" "$state/made"; else rm -f -- "$state/made.new" "$state/made"; fi
}
while [ $# -gt 0 ]; do
  case $1 in
    purge) purge "$2" "$3"; shift 3 ;;
    own) if [ -e "$2" ] || [ -L "$2" ]; then rm -rf -- "$2" && printf '%s\n' "$2"; fi; shift 2 ;;
    tidy) tidy; shift ;;
    rmdir) rmdir -- "$2" 2>/dev/null || true; shift 2 ;;
    *) fail "unknown step \`$1\`" ;;
  esac
done
"#;
