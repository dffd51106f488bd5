#!/usr/bin/env bash
# Install the Debian packages the project needs, only those missing (idempotent).
#   Java 17 runs Spark and the Hive metastore; Maven resolves the Spark jars (requirements/jars/pom.xml);
#   chromium renders the MLflow UI in the browser test; prometheus (for promtool) and
#   prometheus-pushgateway test the alerting rules and the stage metrics (tests/stack/test_prometheus.py);
#   nginx serves the production TLS proxy's template in tests/security/test_tls.py; `cluster` adds Postgres and
#   Redis for the cluster profile. `bash scripts/system_deps.sh java25` prints the
#   Java 24+ home Trino needs (TRINO=on), or fails saying so.
set -euo pipefail
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v zip >/dev/null 2>&1 || need+=(zip)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || need+=(prometheus-pushgateway)
# The TLS proxy test (issue 17) runs nginx as a foreground process of its own; the package's service is disabled below.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
for extra in "$@"; do
  case "$extra" in
    java25)
      # Trino 476 needs Java 24+; Debian's default is 17. TRINO_JAVA_HOME wins, then /usr/lib/jvm.
      for home in "${TRINO_JAVA_HOME:-}" /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/temurin-2[4-9]-* /usr/lib/jvm/java-2[4-9]-*; do
        if [ -n "$home" ] && [ -x "$home/bin/java" ]; then echo "$home"; exit 0; fi
      done
      echo "Trino needs Java 24+: none under /usr/lib/jvm (set TRINO_JAVA_HOME)" >&2; exit 1 ;;
    chromium) command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver) ;;
    # The cluster profile (make up PROFILE=cluster, tests/cluster): Postgres for Airflow's and MLflow's
    # metadata, Redis as the Celery broker; the project runs its own, Debian's services are disabled below.
    cluster)
      ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1 || need+=(postgresql)
      command -v redis-server >/dev/null 2>&1 || need+=(redis-server) ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "Installing Debian packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
# Debian starts (and enables) the services a package ships; the project runs only its own, on
# 127.0.0.1, so a freshly installed Prometheus or Pushgateway (0.0.0.0:9090 / :9091) is stopped
# and disabled again; so is Debian's nginx (its default site listens on 0.0.0.0:80).
for svc in prometheus prometheus-pushgateway nginx postgresql redis-server; do
  case " ${need[*]} " in *" $svc "*) ;; *) continue ;; esac
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$svc" ]; then
    $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    $SUDO update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
done
