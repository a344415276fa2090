# Sourced by zkServer.sh. Debian's zookeeper package has no zkEnv.sh (its
# service runs java directly), so ferry ships this one: it takes
# `--config DIR` and reads DIR/environment, falling back to the image's
# /etc/zookeeper/conf/environment.
if [ $# -gt 1 ] && [ "--config" = "$1" ]; then
  shift
  ZOOCFGDIR=$1
  shift
fi
ZOOCFGDIR=${ZOOCFGDIR:-/etc/zookeeper/conf}
if [ -f "$ZOOCFGDIR/environment" ]; then
  . "$ZOOCFGDIR/environment"
else
  . /etc/zookeeper/conf/environment
fi
ZOOCFG=${ZOOCFG:-$ZOOCFGDIR/zoo.cfg}
ZOO_LOG_DIR=${ZOO_LOG_DIR:-/var/log/zookeeper}
ZOO_LOG_FILE=${ZOO_LOG_FILE:-zookeeper.log}
JAVA=${JAVA:-java}
