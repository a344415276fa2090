#!/usr/bin/env bash
# End-to-end tests on namespaced hosts: starts three hosts (sshd + dockerd
# each) with tests/hosts.sh, runs tests/push.rs (`ferry push`, `ferry gc`)
# and tests/launch.rs (`ferry up` of an HA Spark cluster, submit, failover,
# status, logs, down; needs FERRY_SPARK_LAYOUT, as tests/run.sh sets) against
# them, and always takes the hosts down again. Needs root; installs
# openssh-server and docker.io when missing. A few minutes on 2 cores.
#
#   bash tests/push-e2e.sh            # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

export FERRY_HOSTS_DIR=${FERRY_HOSTS_DIR:-$(mktemp -d /tmp/ferry-e2e-hosts.XXXXXX)}
# the tests' exit status stands, whatever taking the hosts down says
trap 'status=$?; bash tests/hosts.sh down || true; exit $status' EXIT

start=$SECONDS
bash tests/hosts.sh up 3 --behind 1 --users >/dev/null
export FERRY_E2E_HOSTS=$FERRY_HOSTS_DIR
cargo test --test push --test launch "$@" -- --test-threads 1 --nocapture
echo "push-e2e: passed in $((SECONDS - start))s"
