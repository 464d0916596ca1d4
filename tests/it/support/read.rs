//! Reads back what pail wrote: every Parquet object as JSON rows, every dead letter.

use std::path::{Path, PathBuf};

use arrow::json::ArrayWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

/// Every regular, non-hidden file under `dir`, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The rows of one Parquet file as JSON objects.
pub fn parquet_rows(path: &Path) -> Vec<Map<String, Value>> {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut writer = ArrayWriter::new(Vec::new());
    for batch in reader {
        writer.write(&batch.unwrap()).unwrap();
    }
    writer.finish().unwrap();
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Vec::new();
    }
    let rows: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
    rows.into_iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect()
}

/// `(relative path, rows)` for every `.parquet` file under `dir`.
pub fn all_parquet(dir: &Path) -> Vec<(String, Vec<Map<String, Value>>)> {
    files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (rel, parquet_rows(&p))
        })
        .collect()
}

/// Every dead-letter line under `dir` (files ending in `.ndjson`).
pub fn dead_letters(dir: &Path) -> Vec<Value> {
    files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .flat_map(|p| {
            std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `id` of every row of every Parquet object under `dir`, with how often it appears.
pub fn ids(dir: &Path) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for (_, rows) in all_parquet(dir) {
        for row in rows {
            *seen
                .entry(row["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    seen
}
