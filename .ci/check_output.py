#!/usr/bin/env python3
"""Checks pail's output with an independent reader: rows + dead letters = input records.

    python check_output.py INPUT.ndjson OUT_DIR DATASET

INPUT.ndjson is what pail read (its non-blank lines are the records), OUT_DIR the destination
directory, DATASET the hive-partitioned dataset under it (e.g. "events"). pyarrow counts the
rows of every Parquet file under OUT_DIR/DATASET; the dead letters are the lines of the NDJSON
files under OUT_DIR/_errors. Exits 1 when the sum differs from the input.
"""
import pathlib
import sys

import pyarrow.dataset as ds


def main() -> int:
    source, out, dataset = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    records = sum(1 for line in source.read_text().splitlines() if line.strip())
    rows = ds.dataset(out / dataset, format="parquet", partitioning="hive").count_rows()
    dead = sum(
        1
        for f in sorted((out / "_errors").rglob("*.ndjson"))
        for line in f.read_text().splitlines()
        if line.strip()
    )
    verdict = "ok" if rows + dead == records else "MISMATCH"
    print(
        f"pyarrow: {rows} rows + {dead} dead letters = {rows + dead}; "
        f"{records} non-blank input lines in {source}: {verdict}"
    )
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
