#!/usr/bin/env bash
# Install the Debian packages the project needs, only those missing (idempotent).
#   Java 17 runs Spark; jarjar and the SQLite JDBC driver build the offline Iceberg jars;
#   zip/unzip assemble them; chromium renders the MLflow UI in the browser test.
set -euo pipefail
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
[ -f /usr/share/java/jarjar.jar ] || need+=(libjarjar-java)
[ -f /usr/share/java/xerial-sqlite-jdbc.jar ] || need+=(libxerial-sqlite-jdbc-java)
command -v zip >/dev/null 2>&1 || need+=(zip)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
for extra in "$@"; do
  case "$extra" in
    chromium) command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver) ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "Installing Debian packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
