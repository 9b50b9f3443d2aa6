#!/bin/sh
# A one-node KRaft broker configured from the environment, as the Apache Kafka image is:
# every KAFKA_<NAME> variable becomes the broker property <name> in lower case with '_' as
# '.' (KAFKA_LOG_DIRS -> log.dirs); KAFKA_HEAP_OPTS and KAFKA_OPTS go to the JVM. CLUSTER_ID
# formats the log directory on the first start. log.dirs defaults to /var/lib/kafka/data,
# the image's volume, so the data outlives the container.
#   entrypoint.sh broker    run the broker (the default)
#   entrypoint.sh health    exit 0 when the broker answers an ApiVersions request
set -eu
KAFKA_HOME=/opt/kafka
classpath="$KAFKA_HOME/libs/*"

case "${1:-broker}" in
  health)
    # A small JVM: this runs every few seconds next to the broker.
    exec java -Xmx64m -XX:TieredStopAtLevel=1 -Xshare:auto -cp "$classpath" \
      -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.properties" \
      org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "${KAFKA_HEALTH_BOOTSTRAP:-localhost:9092}" \
      >/dev/null
    ;;
  broker) ;;
  *) echo "entrypoint.sh: unknown command '$1' (broker or health)" >&2; exit 2 ;;
esac

: "${CLUSTER_ID:?CLUSTER_ID must name the cluster (22 characters, base64url): kafka-storage random-uuid}"
props=$(mktemp /tmp/server.properties.XXXXXX)
env | sort | while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS|KAFKA_OPTS|KAFKA_HEALTH_BOOTSTRAP) ;;
    KAFKA_*) printf '%s=%s\n' "$(printf '%s' "${name#KAFKA_}" | tr 'A-Z_' 'a-z.')" "$value" ;;
  esac
done > "$props"
grep -q '^log\.dirs=' "$props" || echo "log.dirs=/var/lib/kafka/data" >> "$props"
log_dir=$(sed -n 's/^log\.dirs=//p' "$props" | cut -d, -f1)

# shellcheck disable=SC2086 # the options are a list of JVM flags
jvm() { java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m} ${KAFKA_OPTS:-} -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
  -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.properties" -cp "$classpath" "$@"; }

if [ ! -e "$log_dir/meta.properties" ]; then
  jvm kafka.tools.StorageTool format --ignore-formatted -t "$CLUSTER_ID" -c "$props"
fi
exec java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m} ${KAFKA_OPTS:-} -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
  -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.properties" -cp "$classpath" \
  kafka.Kafka "$props"
