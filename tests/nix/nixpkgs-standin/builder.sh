# The stand-in's generic builder (bash): the phases of stdenv, minus the hooks.
set -eu
runHook() { :; }
if [ -n "${buildCommand:-}" ]; then
  eval "$buildCommand"
else
  if [ -n "${src:-}" ]; then
    cp -r "$src" source
    chmod -R u+w source
    cd source
  fi
  eval "${buildPhase:-}"
  if [ -n "${doCheck:-}" ]; then
    eval "${checkPhase:-}"
  fi
  eval "${installPhase:-}"
fi
# Seen with Nix 2.8 (no sandbox): a builder whose last command is a coreutils
# program (bash execs it in place; it closes stdout before it exits) fails
# about one time in two with "signal 9 (Killed)", as Nix kills the builder
# when the output pipe closes. Ending on a builtin avoids that race.
exit 0
