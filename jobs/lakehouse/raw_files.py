"""Read one trade date of RAW vendor files (Parquet, CSV, JSON lines), file by file.

Reading file by file is what lets one bad delivery be set aside while the rest of the batch
loads: a file that cannot be read, has an unknown format or lacks a required column becomes a
``FileRejection`` (recorded in the file quarantine table), never a silent skip.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from jobs.transforms.bronze import CORRUPT, ColumnMapping, canonical, map_columns

# File name endings and the reader for each (compressed text is read transparently by Spark).
FORMATS = {
    ".parquet": "parquet", ".parq": "parquet",
    ".csv": "csv", ".csv.gz": "csv", ".txt": "csv",
    ".jsonl": "json", ".ndjson": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json",
}


@dataclass(frozen=True)
class RawFile:
    path: str
    size: int

    @property
    def format(self) -> str | None:
        name = self.path.rsplit("/", 1)[-1].lower()
        for ending in sorted(FORMATS, key=len, reverse=True):
            if name.endswith(ending):
                return FORMATS[ending]
        return None


@dataclass(frozen=True)
class FileRejection:
    path: str
    format: str | None
    reason: str
    detail: str
    size: int


@dataclass(frozen=True)
class LoadedFile:
    path: str
    format: str
    mapping: ColumnMapping
    frame: DataFrame
    delivered: tuple[tuple[str, str], ...] = ()  # the file's own (column, Spark type), for schema changes


def list_raw_files(spark, directory: str) -> list[RawFile]:
    """Visible files of the date folder on any Hadoop filesystem (file:, s3a:, hdfs:)."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(directory)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return []
    files = []
    for status in fs.listStatus(path):
        name = status.getPath().getName()
        # Hidden and marker files (.tmp uploads, _SUCCESS) are not deliveries.
        if status.isFile() and not name.startswith((".", "_")):
            files.append(RawFile(path=status.getPath().toString(), size=int(status.getLen())))
    return sorted(files, key=lambda f: f.path)


def _first_line(error: Exception) -> str:
    """The root cause of a reader error, one line (Py4J messages carry the whole Java trace)."""
    text = str(error).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if ln.startswith("Caused by:")]
    return (causes[-1] if causes else lines[0] if lines else type(error).__name__)[:500]


def _read(spark, f: RawFile) -> DataFrame:
    if f.format == "parquet":
        return spark.read.parquet(f.path)
    if f.format == "csv":
        header = spark.read.option("header", True).csv(f.path).columns
        schema = T.StructType([T.StructField(c, T.StringType()) for c in header]
                              + [T.StructField(CORRUPT, T.StringType())])
        return (spark.read.schema(schema).option("header", True).option("mode", "PERMISSIVE")
                .option("columnNameOfCorruptRecord", CORRUPT).csv(f.path))
    # JSON lines: every primitive as text, unparsable lines kept in _corrupt_record.
    return (spark.read.option("primitivesAsString", True).option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT).json(f.path))


def read_raw_file(spark, f: RawFile, aliases: dict[str, str] | None = None) -> LoadedFile | FileRejection:
    """The file as canonical Bronze text columns, or why it cannot be loaded."""
    if f.format is None:
        return FileRejection(f.path, None, "unsupported_format",
                             f"unknown file type (expected one of {', '.join(sorted(FORMATS))})", f.size)
    if f.size == 0:
        return FileRejection(f.path, f.format, "empty_file", "0 bytes", f.size)
    try:
        frame = _read(spark, f)
        if f.format != "parquet":
            # Text formats are parsed lazily: force one pass so a truncated or undecodable file
            # fails here, where it can be set aside, and not in the middle of the Bronze write.
            frame = frame.cache()
            frame.count()
    except Exception as exc:  # Spark wraps every reader failure in Py4J/Analysis exceptions
        return FileRejection(f.path, f.format, "unreadable", _first_line(exc), f.size)
    mapping = map_columns(frame.columns, aliases)
    if mapping.missing_required:
        if set(frame.columns) <= {CORRUPT}:
            return FileRejection(f.path, f.format, "unreadable", "no line of the file parses", f.size)
        return FileRejection(f.path, f.format, "missing_columns",
                             f"lacks {', '.join(mapping.missing_required)} (has {', '.join(frame.columns)})",
                             f.size)
    delivered = tuple((fld.name, fld.dataType.simpleString()) for fld in frame.schema.fields if fld.name != CORRUPT)
    return LoadedFile(f.path, f.format, mapping, canonical(frame, mapping, f.path, f.format), delivered)
