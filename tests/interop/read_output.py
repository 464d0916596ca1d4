#!/usr/bin/env python3
"""Reads pail's Parquet output with two independent readers, pyarrow and DuckDB.

Usage: read_output.py OUT_DIR [TOPIC [PROBE_ID]]

OUT_DIR is the destination directory pail wrote to; TOPIC (default "file", the topic of a file
source) is the first level under it, so the hive partition columns are the directories below
OUT_DIR/TOPIC. Dead letters under OUT_DIR/_errors are not read. PROBE_ID (default 5) is the
`id` of the row reported field by field.

Prints one JSON object (sorted keys) with what each reader saw: {"pyarrow": {...},
"duckdb": {...}, "files": [...]}. The test tests/it/interop.rs compares it with what it wrote.
Exits 3 when a reader is not installed, 1 on any other error, with the reason on stderr.
"""

import json
import os
import sys
import traceback

SETUP_HINT = "run `bash scripts/setup.sh --tests` to install pyarrow and duckdb"

# The row reported field by field (the third argument).
PROBE_ID = 5


def die(code, message):
    print(f"read_output.py: {message}", file=sys.stderr)
    sys.exit(code)


def parquet_files(base):
    """Every *.parquet file under base, as sorted paths relative to base."""
    found = []
    for root, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d != "_errors" and not d.startswith("."))
        for name in files:
            if name.endswith(".parquet"):
                found.append(os.path.relpath(os.path.join(root, name), base))
    return sorted(found)


def key(value):
    """A JSON object key for a group value (None becomes "null")."""
    return "null" if value is None else str(value)


def logical(column):
    """The Parquet logical type of a leaf column as a dict (empty when it has none)."""
    lt = column.logical_type
    if lt is None:
        return {}
    text = lt.to_json()
    return json.loads(text) if text else {}


def is_nanos(column):
    """True for a nanosecond timestamp or an INT96 (legacy nanosecond) column."""
    if column.physical_type == "INT96":
        return True
    lt = logical(column)
    return lt.get("Type") in ("Timestamp", "Time") and lt.get("timeUnit") == "nanoseconds"


def pyarrow_facts(out, topic):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    base = os.path.join(out, topic)
    files = parquet_files(base)
    if not files:
        raise RuntimeError(f"no .parquet files under {base}")

    # The whole topic as one hive-partitioned dataset.
    dataset = ds.dataset(base, format="parquet", partitioning="hive")
    table = dataset.to_table()
    schema = table.schema
    partition_types = {f.name: str(f.type) for f in dataset.partitioning.schema}

    by_country = table.group_by("country").aggregate([("id", "count")]).to_pylist()
    by_dt = table.group_by("dt").aggregate([("id", "count")]).to_pylist()

    probe = table.filter(pc.equal(table["id"], PROBE_ID)).to_pylist()
    if len(probe) != 1:
        raise RuntimeError(f"{len(probe)} rows with id = {PROBE_ID}")
    row = probe[0]
    user = row["user"]
    items = row["items"]

    def sum_of(array):
        return pc.sum(array).as_py()

    at_us = pc.cast(table["at"], pa.int64())
    tags = pc.list_value_length(pc.struct_field(table["user"], "tags"))
    offsets = table["_kafka_offset"]
    facts = {
        "rows": table.num_rows,
        "types": {f.name: str(f.type) for f in schema},
        "partition_types": partition_types,
        "sum_id": sum_of(table["id"]),
        "sum_amount": sum_of(table["amount"]),
        "sum_score": sum_of(table["score"]),
        "sum_at_us": sum_of(at_us),
        "sum_qty": sum_of(pc.struct_field(pc.list_flatten(table["items"]), "qty")),
        "items_total": sum_of(pc.list_value_length(table["items"])),
        "tags_total": sum_of(tags),
        "flag_true": sum_of(pc.cast(table["flag"], pa.int64())),
        "amount_nulls": table["amount"].null_count,
        "user_nulls": table["user"].null_count,
        "country_nulls": table["country"].null_count,
        "kafka_timestamp_nulls": table["_kafka_timestamp"].null_count,
        "kafka_topics": sorted(pc.unique(table["_kafka_topic"]).to_pylist()),
        "kafka_partitions": sorted(pc.unique(table["_kafka_partition"]).to_pylist()),
        "kafka_offset_min": pc.min(offsets).as_py(),
        "kafka_offset_max": pc.max(offsets).as_py(),
        "kafka_offset_distinct": len(pc.unique(offsets)),
        "count_by_country": {key(r["country"]): r["id_count"] for r in by_country},
        "count_by_dt": {key(r["dt"]): r["id_count"] for r in by_dt},
        # The partition directory agrees with the data: dt is the day of ts (and day).
        "dt_mismatches": table.num_rows
        - sum_of(pc.cast(pc.equal(pc.cast(table["day"], pa.string()), table["dt"]), pa.int64())),
        "probe": {
            "user_name": None if user is None else user["name"],
            "user_tags": None if user is None else user["tags"],
            "items_skus": [i["sku"] for i in items],
            "items_qty": [i["qty"] for i in items],
            "at_us": at_us.filter(pc.equal(table["id"], PROBE_ID))[0].as_py(),
            "day": row["day"].isoformat(),
            "dt": row["dt"],
            "country": row["country"],
            "amount": row["amount"],
            "score": row["score"],
            "flag": row["flag"],
        },
    }

    # Every file on its own, through the Parquet metadata.
    per_file = []
    schemas = set()
    nanos = []
    for rel in files:
        pf = pq.ParquetFile(os.path.join(base, rel))
        md = pf.metadata
        schemas.add(pf.schema_arrow.to_string(show_schema_metadata=False))
        kv = {k.decode(): v.decode() for k, v in (md.metadata or {}).items()}
        leaves = {}
        for i in range(md.num_columns):
            col = pf.schema.column(i)
            leaves[col.path] = {"physical": col.physical_type, "logical": logical(col)}
            if is_nanos(col):
                nanos.append(f"{rel}:{col.path}")
        for f in pf.schema_arrow:
            if pa.types.is_timestamp(f.type) and f.type.unit == "ns":
                nanos.append(f"{rel}:{f.name} (arrow)")
        # The leaf column of `id` in the Parquet schema.
        id_leaf = [md.schema.column(i).path for i in range(md.num_columns)].index("id")
        chunk = md.row_group(0).column(id_leaf)
        stats = chunk.statistics
        ids = pf.read(columns=["id"]).column(0)
        file_offsets = pf.read(columns=["_kafka_offset"]).column(0)
        rg_ids = pf.read_row_group(0, columns=["id"]).column(0)
        entry = {
            "path": rel,
            "rows": md.num_rows,
            "row_groups": md.num_row_groups,
            "created_by": md.created_by,
            "pail": {k: v for k, v in kv.items() if k.startswith("pail.")},
            "has_arrow_schema": "ARROW:schema" in kv,
            "leaves": leaves,
            "compression": sorted(
                {
                    md.row_group(g).column(c).compression
                    for g in range(md.num_row_groups)
                    for c in range(md.num_columns)
                }
            ),
            "id_min": pc.min(ids).as_py(),
            "id_max": pc.max(ids).as_py(),
            "offset_min": pc.min(file_offsets).as_py(),
            "offset_max": pc.max(file_offsets).as_py(),
            "id_stats": None
            if stats is None
            else {
                "has_min_max": stats.has_min_max,
                "min": stats.min if stats.has_min_max else None,
                "max": stats.max if stats.has_min_max else None,
                "null_count": stats.null_count if stats.has_null_count else None,
                "row_group_min": pc.min(rg_ids).as_py(),
                "row_group_max": pc.max(rg_ids).as_py(),
            },
        }
        # Page index (column index / offset index): only newer pyarrow says.
        for attr in ("has_column_index", "has_offset_index"):
            if hasattr(chunk, attr):
                entry[attr] = bool(getattr(chunk, attr))
        per_file.append(entry)

    facts["files"] = per_file
    facts["distinct_file_schemas"] = len(schemas)
    facts["nanosecond_columns"] = sorted(nanos)
    facts["version"] = pa.__version__
    return facts


def duckdb_facts(out, topic):
    import duckdb

    base = os.path.join(out, topic)
    pattern = os.path.join(base, "**", "*.parquet").replace("'", "''")
    con = duckdb.connect(":memory:")
    src = f"read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)"

    def one(sql):
        rows = con.execute(sql).fetchall()
        if len(rows) != 1:
            raise RuntimeError(f"{len(rows)} rows from: {sql}")
        return rows[0]

    def num(v):
        # SUM of BIGINT is HUGEINT (a Python int); of DOUBLE a float.
        return v if v is None or isinstance(v, (int, float)) else float(v)

    types = {name: ty for name, ty, *_ in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    (rows, distinct_country, sum_id, sum_amount, sum_score, sum_at_us, amount_nulls,
     user_nulls, kts_nulls, dt_mismatch, country_nulls, items_total, tags_total) = one(
        f"""SELECT count(*), count(DISTINCT country), sum(id), sum(amount), sum(score),
                   sum(epoch_us("at")), count(*) FILTER (WHERE amount IS NULL),
                   count(*) FILTER (WHERE "user" IS NULL),
                   count(*) FILTER (WHERE _kafka_timestamp IS NULL),
                   count(*) FILTER (WHERE CAST(dt AS VARCHAR) IS DISTINCT FROM CAST("day" AS VARCHAR)),
                   count(*) FILTER (WHERE country IS NULL),
                   sum(len(items)), sum(len("user".tags))
            FROM {src}"""
    )
    typeof_at, typeof_day, typeof_ts, typeof_kts = one(
        f"""SELECT typeof("at"), typeof("day"), typeof(ts), typeof(_kafka_timestamp)
            FROM {src} LIMIT 1"""
    )
    probe = one(
        f"""SELECT "user".name, items[1].sku, items[1].qty, len(items), epoch_us("at"),
                   CAST("day" AS VARCHAR), CAST(dt AS VARCHAR), country, amount, score, flag
            FROM {src} WHERE id = {PROBE_ID}"""
    )
    by_country = con.execute(f"SELECT country, count(*) FROM {src} GROUP BY ALL").fetchall()
    # The file's own country column, without the hive value shadowing it.
    (country_nulls_in_files,) = one(
        f"""SELECT count(*) FILTER (WHERE country IS NULL)
            FROM read_parquet('{pattern}', hive_partitioning = false, union_by_name = true)"""
    )
    by_dt = con.execute(f"SELECT CAST(dt AS VARCHAR), count(*) FROM {src} GROUP BY ALL").fetchall()
    # DuckDB's own reading of the footer: key-value metadata and per-file row counts.
    kv = con.execute(
        f"""SELECT file_name, decode(key), decode(value)
            FROM parquet_kv_metadata('{pattern}') WHERE decode(key) LIKE 'pail.%'"""
    ).fetchall()
    record_count_sum = sum(int(v) for _, k, v in kv if k == "pail.record_count")
    files_with_version = len({f for f, k, _ in kv if k == "pail.version"})
    at_schema = con.execute(
        f"""SELECT DISTINCT type, converted_type, logical_type
            FROM parquet_schema('{pattern}') WHERE name = 'at'"""
    ).fetchall()
    return {
        "rows": rows,
        "types": types,
        "typeof_at": typeof_at,
        "typeof_day": typeof_day,
        "typeof_ts": typeof_ts,
        "typeof_kafka_timestamp": typeof_kts,
        "distinct_country": distinct_country,
        "sum_id": num(sum_id),
        "sum_amount": num(sum_amount),
        "sum_score": num(sum_score),
        "sum_at_us": num(sum_at_us),
        "items_total": num(items_total),
        "tags_total": num(tags_total),
        "amount_nulls": amount_nulls,
        "user_nulls": user_nulls,
        "country_nulls": country_nulls,
        "country_nulls_in_files": country_nulls_in_files,
        "kafka_timestamp_nulls": kts_nulls,
        "dt_mismatches": dt_mismatch,
        "count_by_country": {key(c): n for c, n in by_country},
        "count_by_dt": {key(d): n for d, n in by_dt},
        "probe": {
            "user_name": probe[0],
            "items_1_sku": probe[1],
            "items_1_qty": probe[2],
            "items_len": probe[3],
            "at_us": probe[4],
            "day": probe[5],
            "dt": probe[6],
            "country": probe[7],
            "amount": probe[8],
            "score": probe[9],
            "flag": probe[10],
        },
        "kv_record_count_sum": record_count_sum,
        "kv_files_with_version": files_with_version,
        "at_parquet_schema": [
            {"type": str(t), "converted_type": str(c), "logical_type": str(lt)}
            for t, c, lt in sorted(at_schema, key=str)
        ],
        "version": duckdb.__version__,
    }


def main():
    global PROBE_ID
    if len(sys.argv) not in (2, 3, 4):
        die(2, "usage: read_output.py OUT_DIR [TOPIC [PROBE_ID]]")
    out = sys.argv[1]
    topic = sys.argv[2] if len(sys.argv) >= 3 else "file"
    if len(sys.argv) == 4:
        PROBE_ID = int(sys.argv[3])
    for module in ("pyarrow", "duckdb"):
        try:
            __import__(module)
        except ImportError as e:
            die(3, f"cannot import {module} ({e}); {SETUP_HINT}")
    try:
        facts = {"pyarrow": pyarrow_facts(out, topic), "duckdb": duckdb_facts(out, topic)}
        facts["files"] = parquet_files(os.path.join(out, topic))
    except Exception:
        die(1, "reading the output failed:\n" + traceback.format_exc())
    json.dump(facts, sys.stdout, sort_keys=True, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
