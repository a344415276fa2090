#!/usr/bin/env bash
# End-to-end tests of `ferry push`: starts three namespaced hosts (sshd +
# dockerd each) with tests/hosts.sh, runs tests/push.rs against them, and
# always takes the hosts down again. Needs root; installs openssh-server and
# docker.io when missing. Takes about a minute on a 2-core machine.
#
#   bash tests/push-e2e.sh            # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

export FERRY_HOSTS_DIR=${FERRY_HOSTS_DIR:-$(mktemp -d /tmp/ferry-e2e-hosts.XXXXXX)}
trap 'bash tests/hosts.sh down' EXIT

start=$SECONDS
bash tests/hosts.sh up 3 --behind 1 --users >/dev/null
export FERRY_E2E_HOSTS=$FERRY_HOSTS_DIR
cargo test --test push "$@" -- --test-threads 1
echo "push-e2e: passed in $((SECONDS - start))s"
