//! Sealed files → Parquet bytes (and dead letters → NDJSON), with provenance metadata.
//!
//! The fast path feeds the buffered payloads straight into arrow-json's decoder with the
//! inferred schema. If a file holds a type conflict that decoder cannot coerce (an object in
//! a JSON-text column, say), the file is re-encoded from normalised values instead.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::json::ReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use thiserror::Error;

use crate::buffer::{OpenFile, RowMeta};
use crate::config::{Compression, ParquetSettings};

/// The pail version written into every file and object.
pub const PAIL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Metadata columns added to every row, unless an event field of the same name exists.
pub const META_TOPIC: &str = "_kafka_topic";
pub const META_PARTITION: &str = "_kafka_partition";
pub const META_OFFSET: &str = "_kafka_offset";
pub const META_TIMESTAMP: &str = "_kafka_timestamp";

/// Encoding failed; this is a bug or resource problem, never a property of one record.
#[derive(Debug, Error)]
pub enum EncodeError {
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("decoded {got} rows but the file holds {want}")]
    RowCount { got: usize, want: usize },
    #[error("stored payload no longer parses: {0}")]
    Reparse(#[from] serde_json::Error),
}

/// Identifies the source of a file for its metadata.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    pub topic: &'a str,
    pub partition: i32,
}

/// Encodes one open file as a Parquet object.
pub fn encode_parquet(
    file: &OpenFile,
    source: Provenance<'_>,
    settings: &ParquetSettings,
) -> Result<Vec<u8>, EncodeError> {
    match encode_with(file, source, settings, false) {
        Ok(bytes) => Ok(bytes),
        Err(EncodeError::Arrow(_)) => encode_with(file, source, settings, true),
        Err(other) => Err(other),
    }
}

fn encode_with(
    file: &OpenFile,
    source: Provenance<'_>,
    settings: &ParquetSettings,
    normalize: bool,
) -> Result<Vec<u8>, EncodeError> {
    let user_fields = file.schema.to_arrow();
    let meta_fields: Vec<Field> = [
        Field::new(META_TOPIC, DataType::Utf8, false),
        Field::new(META_PARTITION, DataType::Int32, false),
        Field::new(META_OFFSET, DataType::Int64, false),
        Field::new(
            META_TIMESTAMP,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]
    .into_iter()
    .filter(|f| !file.schema.contains(f.name()))
    .collect();
    let user_schema: SchemaRef = Arc::new(Schema::new(user_fields.clone()));
    let mut all: Vec<Arc<Field>> = user_fields.iter().cloned().collect();
    all.extend(meta_fields.iter().cloned().map(Arc::new));
    let schema = Arc::new(Schema::new(all));

    let first = file.rows.first().map_or(0, |r| r.offset);
    let last = file.rows.last().map_or(0, |r| r.offset);
    let props = writer_properties(settings, source, first, last, file.rows.len());
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;

    let batch_rows = settings.row_group_size.clamp(1, 8192);
    let mut row = 0;
    while row < file.rows.len() {
        let n = batch_rows.min(file.rows.len() - row);
        let user_columns = decode_rows(file, &user_schema, row, n, normalize)?;
        let mut columns = user_columns;
        columns.extend(meta_columns(&meta_fields, &file.rows[row..row + n], source));
        let batch = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        writer.write(&batch)?;
        row += n;
    }
    Ok(writer.into_inner()?)
}

/// Decodes rows `[row, row + n)` into the user columns of `schema`.
fn decode_rows(
    file: &OpenFile,
    schema: &SchemaRef,
    row: usize,
    n: usize,
    normalize: bool,
) -> Result<Vec<ArrayRef>, EncodeError> {
    if schema.fields().is_empty() {
        return Ok(Vec::new());
    }
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(n)
        .with_coerce_primitive(true)
        .build_decoder()?;
    if normalize {
        let values = (row..row + n)
            .map(|i| {
                let v: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(file.payload(i))?;
                Ok(file.schema.normalize_object(&v))
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        decoder.serialize(&values)?;
    } else {
        let start = if row == 0 { 0 } else { file.rows[row - 1].end };
        let end = file.rows[row + n - 1].end;
        let mut buf = &file.payloads[start..end];
        while !buf.is_empty() {
            let read = decoder.decode(buf)?;
            if read == 0 {
                break;
            }
            buf = &buf[read..];
        }
    }
    let batch = decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    if batch.num_rows() != n {
        return Err(EncodeError::RowCount {
            got: batch.num_rows(),
            want: n,
        });
    }
    Ok(batch.columns().to_vec())
}

fn meta_columns(fields: &[Field], rows: &[RowMeta], source: Provenance<'_>) -> Vec<ArrayRef> {
    fields
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                META_TOPIC => Arc::new(StringArray::from(vec![source.topic; rows.len()])),
                META_PARTITION => Arc::new(Int32Array::from(vec![source.partition; rows.len()])),
                META_OFFSET => {
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.offset)))
                }
                _ => Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        rows.iter()
                            .map(|r| r.timestamp_ms.map(|ms| ms.saturating_mul(1000))),
                    )
                    .with_timezone("UTC"),
                ),
            }
        })
        .collect()
}

fn writer_properties(
    settings: &ParquetSettings,
    source: Provenance<'_>,
    first: i64,
    last: i64,
    rows: usize,
) -> WriterProperties {
    let compression = match settings.compression {
        Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::default()),
        Compression::Snappy => ParquetCompression::SNAPPY,
        Compression::None => ParquetCompression::UNCOMPRESSED,
    };
    let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
    WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(settings.row_group_size))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("pail version {PAIL_VERSION}"))
        .set_key_value_metadata(Some(vec![
            kv("pail.version", PAIL_VERSION.to_string()),
            kv("pail.topic", source.topic.to_string()),
            kv("pail.partition", source.partition.to_string()),
            kv("pail.first_offset", first.to_string()),
            kv("pail.last_offset", last.to_string()),
            kv("pail.record_count", rows.to_string()),
        ]))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Segment;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn settings() -> ParquetSettings {
        ParquetSettings {
            compression: Compression::Zstd,
            row_group_size: 3,
        }
    }

    fn file_of(lines: &[&str]) -> OpenFile {
        let mut seg = Segment::new("t".into(), 0, 0, 0);
        for (i, l) in lines.iter().enumerate() {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).unwrap();
            seg.push_row(
                "p".into(),
                l.as_bytes(),
                &v,
                i as i64,
                Some(1_000 + i as i64),
            );
        }
        seg.files.remove("p").unwrap()
    }

    fn read(bytes: Vec<u8>) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn round_trips_rows_nested_fields_and_metadata_columns() {
        let file = file_of(&[
            r#"{"id":1,"user":{"name":"a","tags":["x"]}}"#,
            r#"{"id":2,"user":{"name":"b"},"extra":1.5}"#,
            "{\n\"id\": 3\n}",
            r#"{"id":4}"#,
        ]);
        let batches = read(
            encode_parquet(
                &file,
                Provenance {
                    topic: "t",
                    partition: 7,
                },
                &settings(),
            )
            .unwrap(),
        );
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 4);
        let schema = batches[0].schema();
        assert_eq!(
            schema.field_with_name("id").unwrap().data_type(),
            &DataType::Int64
        );
        assert_eq!(
            schema.field_with_name(META_TIMESTAMP).unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let parts = batches[0].column_by_name(META_PARTITION).unwrap();
        assert_eq!(
            parts
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap()
                .value(0),
            7
        );
    }

    #[test]
    fn type_conflicts_fall_back_to_json_text_without_losing_rows() {
        let file = file_of(&[
            r#"{"v":1}"#,
            r#"{"v":{"a":[1,2]}}"#,
            r#"{"v":"s"}"#,
            r#"{"v":{}}"#,
        ]);
        let batches = read(
            encode_parquet(
                &file,
                Provenance {
                    topic: "t",
                    partition: 0,
                },
                &settings(),
            )
            .unwrap(),
        );
        let mut values = Vec::new();
        for b in &batches {
            let col = b
                .column_by_name("v")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            values.extend(col.iter().map(|v| v.unwrap().to_string()));
        }
        assert_eq!(values, ["1", "{\"a\":[1,2]}", "s", "{}"]);
    }

    #[test]
    fn a_field_named_like_a_metadata_column_wins() {
        let file = file_of(&[r#"{"_kafka_offset":"mine"}"#]);
        let batches = read(
            encode_parquet(
                &file,
                Provenance {
                    topic: "t",
                    partition: 0,
                },
                &settings(),
            )
            .unwrap(),
        );
        let col = batches[0].column_by_name(META_OFFSET).unwrap();
        assert_eq!(col.data_type(), &DataType::Utf8);
    }

    #[test]
    fn empty_objects_still_make_rows() {
        let file = file_of(&["{}", "{}"]);
        let batches = read(
            encode_parquet(
                &file,
                Provenance {
                    topic: "t",
                    partition: 0,
                },
                &settings(),
            )
            .unwrap(),
        );
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    }
}
