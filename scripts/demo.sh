#!/usr/bin/env bash
# The README's first command: from a fresh Debian/Ubuntu machine to a Spark
# job's answer. Installs Docker when missing, builds ferry, builds the
# built-in default image (Spark 3.5.3, ZooKeeper 3.8, Python 3.11 with numpy
# and pandas) from its pinned inputs, loads it into Docker, starts a local
# cluster (one ZooKeeper, one master in ZooKeeper recovery mode, one worker),
# runs the sample PySpark job on it and prints the answer and the UI address.
#
#   bash scripts/demo.sh          # leaves the cluster running
#   bash scripts/demo.sh --down   # stops and removes it
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
net=ferry-demo
containers=(ferry-demo-worker ferry-demo-master ferry-demo-zk)

if [ "${1:-}" = "--down" ]; then
  docker rm -f "${containers[@]}" >/dev/null 2>&1 || true
  docker network rm "$net" >/dev/null 2>&1 || true
  echo "stopped the demo cluster"
  exit 0
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed: install Rust (\`apt-get install cargo\`, or rustup) and run this again" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  echo "== installing docker.io"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd"
  if command -v systemctl >/dev/null && as_root systemctl start docker 2>/dev/null; then :; else
    as_root sh -c 'nohup dockerd >/var/log/ferry-dockerd.log 2>&1 </dev/null &'
  fi
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "error: dockerd did not start: see /var/log/ferry-dockerd.log" >&2; exit 1; }
fi

echo "== building ferry"
cargo build --release --quiet
ferry=target/release/ferry

echo "== building the default image (first time: downloads about 450 MB of pinned inputs into ~/.cache/ferry)"
if ! $ferry build --out out/spark --docker-archive out/spark.tar 2>out/.demo-build.log; then
  cat out/.demo-build.log >&2
  if grep -q "failed for\|cannot download\|no longer served" out/.demo-build.log; then
    echo "NOTICE: a pinned input is no longer served upstream; re-locking a copy into your cache and building that (the committed lock is unchanged)" >&2
    work="${XDG_CACHE_HOME:-$HOME/.cache}/ferry/demo-relock"
    rm -rf "$work" && mkdir -p "$work" && cp -r images/spark "$work/"
    $ferry lock "$work/spark/image.toml" --update
    $ferry build "$work/spark/image.toml" --out out/spark --docker-archive out/spark.tar
  else
    exit 1
  fi
else
  tail -1 out/.demo-build.log
fi
docker load -i out/spark.tar
image=ferry/spark:3.5.3

echo "== starting a local cluster: ZooKeeper, a master, a worker"
docker rm -f "${containers[@]}" >/dev/null 2>&1 || true
docker network create "$net" >/dev/null 2>&1 || true
docker run -d --name ferry-demo-zk --hostname ferry-demo-zk --network "$net" --user zookeeper "$image" \
  /usr/share/zookeeper/bin/zkServer.sh --config /etc/zookeeper/conf start-foreground >/dev/null
docker run -d --name ferry-demo-master --hostname ferry-demo-master --network "$net" -p 127.0.0.1:8080:8080 \
  -e SPARK_DAEMON_JAVA_OPTS="-Dspark.deploy.recoveryMode=ZOOKEEPER -Dspark.deploy.zookeeper.url=ferry-demo-zk:2181 -Dspark.deploy.zookeeper.dir=/spark" \
  "$image" spark-class org.apache.spark.deploy.master.Master --host ferry-demo-master --port 7077 --webui-port 8080 >/dev/null
docker run -d --name ferry-demo-worker --hostname ferry-demo-worker --network "$net" "$image" \
  spark-class org.apache.spark.deploy.worker.Worker --cores 2 --memory 1g spark://ferry-demo-master:7077 >/dev/null

status() {
  docker exec ferry-demo-master bash -c \
    'exec 3<>/dev/tcp/127.0.0.1/8080; printf "GET /json/ HTTP/1.0\r\n\r\n" >&3; cat <&3' 2>/dev/null || true
}
deadline=$((SECONDS + 120))
until status | grep -q '"aliveworkers" : 1'; do
  if [ $SECONDS -gt $deadline ]; then
    echo "error: the worker did not register with the master within 120 s; master log:" >&2
    docker logs --tail 20 ferry-demo-master >&2
    exit 1
  fi
  sleep 1
done
echo "   master ALIVE, 1 worker registered"

echo "== running the sample job on the cluster"
answer=$(docker run --rm --network "$net" "$image" spark-submit --master spark://ferry-demo-master:7077 /opt/ferry/jobs/sample.py 2>/dev/null | grep '^ferry-sample:')
echo
echo "$answer"
echo
echo "Spark master UI: http://127.0.0.1:8080   (stop the cluster: bash scripts/demo.sh --down)"
