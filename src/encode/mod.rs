//! Buffered rows → Parquet bytes, with `_kafka_*` metadata columns and provenance metadata:
//! a whole file at once (`encode_parquet`), or row group by row group as a file fills
//! (`stream::ParquetStream`).
//!
//! The fast path feeds the buffered payloads straight into arrow-json's decoder with the
//! inferred schema. If rows hold a type conflict that decoder cannot coerce (an object in
//! a JSON-text column, say), they are decoded again from normalised values instead.

pub mod stream;

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
use parquet::schema::types::ColumnPath;
use thiserror::Error;

use base64::Engine as _;

use crate::buffer::OpenFile;
use crate::config::{Compression, ParquetSettings};
use crate::schema::{FileSchema, METADATA_COLUMNS};

/// The pail version written into every file and object.
pub const PAIL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Metadata columns added to every row (as configured), unless an event field of the same
/// name exists: the event's own field wins.
pub const META_TOPIC: &str = METADATA_COLUMNS[0];
pub const META_PARTITION: &str = METADATA_COLUMNS[1];
pub const META_OFFSET: &str = METADATA_COLUMNS[2];
pub const META_TIMESTAMP: &str = METADATA_COLUMNS[3];
/// The record key: its text when UTF-8, its standard base64 otherwise.
pub const META_KEY: &str = METADATA_COLUMNS[4];

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
    #[error(transparent)]
    Unpack(#[from] crate::buffer::UnpackError),
    /// A streamed file's column would change type after row groups with the old type were
    /// written; the segment should have been cut before the record that changed it.
    #[error("column {column:?} was written as {was} and cannot become {now} in the same file")]
    ColumnChanged {
        column: String,
        was: String,
        now: String,
    },
}

/// Identifies the source of a file for its metadata.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    pub topic: &'a str,
    pub partition: i32,
}

/// Encodes one open file as a Parquet object with the columns of `schema`.
pub fn encode_parquet(
    file: &OpenFile,
    schema: &FileSchema,
    source: Provenance<'_>,
    settings: &ParquetSettings,
) -> Result<Vec<u8>, EncodeError> {
    let (arrow_schema, batches) = record_batches(file, schema, source, settings)?;
    let first = file.rows.first().map_or(0, |r| r.offset);
    let last = file.rows.last().map_or(0, |r| r.offset);
    let props = writer_properties(settings, source, first, last, file.rows.len());
    let mut writer = ArrowWriter::try_new(Vec::new(), arrow_schema, Some(props))?;
    for batch in &batches {
        writer.write(batch)?;
    }
    Ok(writer.into_inner()?)
}

/// Decodes a file's rows into record batches with the columns of `schema` and the metadata
/// columns. The fast path feeds the raw payloads to arrow-json; a type conflict that decoder
/// cannot coerce is decoded again from normalised values.
pub fn record_batches(
    file: &OpenFile,
    schema: &FileSchema,
    source: Provenance<'_>,
    settings: &ParquetSettings,
) -> Result<(SchemaRef, Vec<RecordBatch>), EncodeError> {
    // Unpacked once, for the fast path and the fallback alike.
    let payloads = file.payloads()?;
    let rows = Rows {
        file,
        payloads: &payloads,
    };
    if !schema.raw_decodable() {
        return batches_with(rows, schema, source, settings, true);
    }
    match batches_with(rows, schema, source, settings, false) {
        Ok(batches) => Ok(batches),
        Err(EncodeError::Arrow(_)) => batches_with(rows, schema, source, settings, true),
        Err(other) => Err(other),
    }
}

fn meta_fields(file: &OpenFile, schema: &FileSchema, settings: &ParquetSettings) -> Vec<Field> {
    let m = settings.metadata;
    [
        (m.topic, Field::new(META_TOPIC, DataType::Utf8, false)),
        (
            m.partition,
            Field::new(META_PARTITION, DataType::Int32, false),
        ),
        (m.offset, Field::new(META_OFFSET, DataType::Int64, false)),
        (
            m.timestamp,
            Field::new(
                META_TIMESTAMP,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ),
        (
            m.key && file.has_keys(),
            Field::new(META_KEY, DataType::Utf8, true),
        ),
    ]
    .into_iter()
    .filter(|(on, f)| *on && !schema.contains(f.name()))
    .map(|(_, f)| f)
    .collect()
}

/// A file's rows with its payloads unpacked.
#[derive(Clone, Copy)]
struct Rows<'a> {
    file: &'a OpenFile,
    payloads: &'a [u8],
}

fn batches_with(
    rows: Rows<'_>,
    file_schema: &FileSchema,
    source: Provenance<'_>,
    settings: &ParquetSettings,
    normalize: bool,
) -> Result<(SchemaRef, Vec<RecordBatch>), EncodeError> {
    let file = rows.file;
    let user_fields = file_schema.to_arrow();
    let meta_fields = meta_fields(file, file_schema, settings);
    let user_schema: SchemaRef = Arc::new(Schema::new(user_fields.clone()));
    let mut all: Vec<Arc<Field>> = user_fields.iter().cloned().collect();
    all.extend(meta_fields.iter().cloned().map(Arc::new));
    let schema = Arc::new(Schema::new(all));

    let batch_rows = settings.row_group_size.clamp(1, 8192);
    let mut batches = Vec::with_capacity(file.rows.len().div_ceil(batch_rows));
    let mut row = 0;
    while row < file.rows.len() {
        let n = batch_rows.min(file.rows.len() - row);
        let mut columns = decode_rows(rows, file_schema, &user_schema, row, n, normalize)?;
        columns.extend(meta_columns(&meta_fields, file, row, n, source));
        batches.push(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?);
        row += n;
    }
    Ok((schema, batches))
}

/// Decodes rows `[row, row + n)` into the user columns of `schema`.
fn decode_rows(
    rows: Rows<'_>,
    file_schema: &FileSchema,
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
                    serde_json::from_slice(&rows.payloads[rows.file.payload_range(i)])?;
                Ok(file_schema.normalize_object(&v))
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        decoder.serialize(&values)?;
    } else {
        let start = rows.file.payload_range(row).start;
        let end = rows.file.payload_range(row + n - 1).end;
        let mut buf = &rows.payloads[start..end];
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

fn meta_columns(
    fields: &[Field],
    file: &OpenFile,
    row: usize,
    n: usize,
    source: Provenance<'_>,
) -> Vec<ArrayRef> {
    let rows = &file.rows[row..row + n];
    fields
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                META_TOPIC => Arc::new(StringArray::from(vec![source.topic; n])),
                META_PARTITION => Arc::new(Int32Array::from(vec![source.partition; n])),
                META_OFFSET => {
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.offset)))
                }
                META_KEY => Arc::new(StringArray::from_iter((row..row + n).map(|i| {
                    file.key(i).map(|k| match std::str::from_utf8(k) {
                        Ok(text) => text.to_string(),
                        Err(_) => base64::engine::general_purpose::STANDARD.encode(k),
                    })
                }))),
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

/// The writer properties of pail's Parquet files; `first`, `last` and `rows` describe the
/// records in the file's key-value metadata.
pub fn writer_properties(
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
        // Page-level statistics also write the column and offset indexes (page indexes).
        .set_statistics_enabled(EnabledStatistics::Page)
        // Offsets are unique: a dictionary would never pay for itself.
        .set_column_dictionary_enabled(ColumnPath::from(META_OFFSET), false)
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
    use crate::config::MetadataColumns;
    use crate::schema::{Fields, InferRules, SchemaSettings};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn settings() -> ParquetSettings {
        ParquetSettings {
            compression: Compression::Zstd,
            row_group_size: 3,
            row_group_bytes: 8 << 20,
            metadata: MetadataColumns::ALL,
        }
    }

    /// A file of these lines (every other one keyed), and the schema inferred from them.
    fn file_of(lines: &[&str]) -> (OpenFile, FileSchema) {
        let mut seg = Segment::new("t".into(), 0, 0, 0);
        let rules = InferRules {
            temporal_strings: true,
            ..InferRules::default()
        };
        for (i, l) in lines.iter().enumerate() {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).unwrap();
            seg.schema.merge_object(&v, &rules);
            let key = (i % 2 == 0).then_some(if i % 4 == 0 { &b"k"[..] } else { b"\xff" });
            seg.push_row("p", l.as_bytes(), key, i as i64, Some(1_000 + i as i64));
        }
        let schema =
            SchemaSettings::default().file_schema(&mut Arc::new(Fields::default()), &seg.schema);
        (seg.files.remove("p").unwrap(), schema)
    }

    fn encode(lines: &[&str], settings: &ParquetSettings) -> Vec<RecordBatch> {
        let (file, schema) = file_of(lines);
        let source = Provenance {
            topic: "t",
            partition: 7,
        };
        let bytes = encode_parquet(&file, &schema, source, settings).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn strings(batches: &[RecordBatch], column: &str) -> Vec<Option<String>> {
        batches
            .iter()
            .flat_map(|b| {
                let col = b.column_by_name(column).unwrap();
                let col = col.as_any().downcast_ref::<StringArray>().unwrap();
                col.iter()
                    .map(|v| v.map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn round_trips_rows_nested_fields_and_metadata_columns() {
        let batches = encode(
            &[
                r#"{"id":1,"user":{"name":"a","tags":["x"]},"at":"2026-01-01T00:00:00Z"}"#,
                r#"{"id":2,"user":{"name":"b"},"extra":1.5}"#,
                "{\n\"id\": 3\n}",
                r#"{"id":4}"#,
            ],
            &settings(),
        );
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 4);
        let schema = batches[0].schema();
        assert_eq!(
            schema.field_with_name("id").unwrap().data_type(),
            &DataType::Int64
        );
        let micros_utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(
            schema.field_with_name("at").unwrap().data_type(),
            &micros_utc
        );
        assert_eq!(
            schema.field_with_name(META_TIMESTAMP).unwrap().data_type(),
            &micros_utc
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
        assert_eq!(
            strings(&batches, META_KEY),
            [Some("k".to_string()), None, Some("/w==".to_string()), None]
        );
    }

    #[test]
    fn metadata_columns_follow_the_settings() {
        let mut s = settings();
        s.metadata = MetadataColumns {
            offset: true,
            ..MetadataColumns::NONE
        };
        let batches = encode(&[r#"{"id":1}"#], &s);
        let names: Vec<String> = batches[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["id", META_OFFSET]);
    }

    #[test]
    fn type_conflicts_fall_back_to_json_text_without_losing_rows() {
        let batches = encode(
            &[
                r#"{"v":1}"#,
                r#"{"v":{"a":[1,2]}}"#,
                r#"{"v":"s"}"#,
                r#"{"v":{}}"#,
            ],
            &settings(),
        );
        let values: Vec<String> = strings(&batches, "v").into_iter().flatten().collect();
        assert_eq!(values, ["1", "{\"a\":[1,2]}", "s", "{}"]);
    }

    #[test]
    fn a_field_named_like_a_metadata_column_wins() {
        let batches = encode(&[r#"{"_kafka_offset":"mine"}"#], &settings());
        let col = batches[0].column_by_name(META_OFFSET).unwrap();
        assert_eq!(col.data_type(), &DataType::Utf8);
    }

    #[test]
    fn empty_objects_still_make_rows() {
        let batches = encode(&["{}", "{}"], &settings());
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    }

    #[test]
    fn declared_columns_are_written_with_their_types() {
        use crate::schema::declared::{Column, Declared, UnknownFields, parse_type};
        use arrow::array::{Array, Date32Array, Decimal128Array, StructArray};
        let col = |name: &str, ty: &str, nullable: bool| Column {
            name: name.into(),
            ty: parse_type(ty).unwrap(),
            nullable,
        };
        let declared = Declared {
            columns: vec![
                col("id", "int64", false),
                col("at", "timestamp", true),
                col("day", "date", true),
                col("price", "decimal(10,2)", true),
                col("user", "struct<name: string not null>", true),
                col("raw", "json", true),
            ],
            unknown_fields: UnknownFields::Ignore,
        };
        let lines = [
            r#"{"id":1,"at":1000,"day":"1970-01-02","price":"1.5","user":{"name":"a"},"raw":{"x":1},"extra":1}"#,
            r#"{"id":2,"at":"1970-01-01T00:00:02Z","day":null,"price":2,"user":null,"raw":[1]}"#,
        ];
        let (file, _) = file_of(&lines);
        let schema = FileSchema::Declared(Arc::new(declared));
        let source = Provenance {
            topic: "t",
            partition: 0,
        };
        let bytes = encode_parquet(&file, &schema, source, &settings()).unwrap();
        let batch = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let at = batch.column_by_name("at").unwrap();
        let at = at
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!((at.value(0), at.value(1)), (1_000_000, 2_000_000));
        let day = batch.column_by_name("day").unwrap();
        let day = day.as_any().downcast_ref::<Date32Array>().unwrap();
        assert_eq!((day.value(0), day.is_null(1)), (1, true));
        let price = batch.column_by_name("price").unwrap();
        let price = price.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!((price.value(0), price.value(1)), (150, 200));
        let user = batch.column_by_name("user").unwrap();
        let user = user.as_any().downcast_ref::<StructArray>().unwrap();
        assert!(user.is_valid(0) && user.is_null(1));
        assert_eq!(
            strings(std::slice::from_ref(&batch), "raw"),
            [Some("{\"x\":1}".to_string()), Some("[1]".to_string())]
        );
        assert!(batch.column_by_name("extra").is_none());
        assert!(!batch.schema().field_with_name("id").unwrap().is_nullable());
    }
}
