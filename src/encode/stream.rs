//! One Parquet file written row group by row group, its bytes taken as they are produced, so
//! that a file is never held whole: the stream behind multipart uploads of open files.
//!
//! Each row group is encoded on its own (as a one-row-group file whose column chunks are
//! copied out and whose footer is kept), so a later row group may bring columns the earlier
//! ones lack. Parquet finds column chunks by their offsets in the footer, wherever they sit
//! in the file: at `finish`, the all-null chunks a column needs for the row groups written
//! before it appeared go after the last row group, and the footer names every chunk. A
//! column's type cannot change once written ([`EncodeError::ColumnChanged`]); the pipeline
//! cuts the segment before a record that would change one.
//!
//! Files written this way carry chunk-level statistics, not page indexes.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter, encode_arrow_schema};
use parquet::file::metadata::{
    ColumnChunkMetaData, FileMetaData, KeyValue, ParquetMetaData, ParquetMetaDataReader,
    ParquetMetaDataWriter, RowGroupMetaData,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::{EncodeError, PAIL_VERSION, Provenance, record_batches, writer_properties};
use crate::buffer::OpenFile;
use crate::config::ParquetSettings;
use crate::schema::FileSchema;

const MAGIC: &[u8; 4] = b"PAR1";

/// A row group already in the stream: where its column chunks are, by top-level column.
#[derive(Debug)]
struct WrittenGroup {
    rows: i64,
    /// Uncompressed bytes of its columns (the footer's `total_byte_size`).
    bytes: i64,
    file_offset: i64,
    chunks: HashMap<String, Vec<ColumnChunkMetaData>>,
}

/// A Parquet file being written; see the module documentation.
#[derive(Debug)]
pub struct ParquetStream {
    settings: ParquetSettings,
    topic: String,
    partition: i32,
    /// The file's columns in order of first appearance, with the type they were written with.
    fields: Vec<FieldRef>,
    groups: Vec<WrittenGroup>,
    /// Encoded bytes not yet taken.
    out: Vec<u8>,
    /// Bytes produced so far: taken ones and `out`.
    position: u64,
    rows: usize,
    first_offset: Option<i64>,
    last_offset: i64,
}

impl ParquetStream {
    /// A file for records of `source`.
    pub fn new(settings: &ParquetSettings, source: Provenance<'_>) -> Self {
        Self {
            settings: settings.clone(),
            topic: source.topic.to_string(),
            partition: source.partition,
            fields: Vec::new(),
            groups: Vec::new(),
            out: MAGIC.to_vec(),
            position: MAGIC.len() as u64,
            rows: 0,
            first_offset: None,
            last_offset: 0,
        }
    }

    fn source(&self) -> Provenance<'_> {
        Provenance {
            topic: &self.topic,
            partition: self.partition,
        }
    }

    /// Encodes `file`'s rows as one row group with the columns of `schema`.
    pub fn write_group(&mut self, file: &OpenFile, schema: &FileSchema) -> Result<(), EncodeError> {
        if file.rows.is_empty() {
            return Ok(());
        }
        let (arrow_schema, batches) = record_batches(file, schema, self.source(), &self.settings)?;
        let fixed = self.fit(&arrow_schema)?;
        let batches = batches
            .into_iter()
            .map(|b| {
                RecordBatch::try_new_with_options(
                    fixed.clone(),
                    b.columns().to_vec(),
                    &RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rows = file.rows.len() as i64;
        let group = self.append_chunks(&fixed, &batches, None)?;
        self.groups.push(WrittenGroup {
            rows,
            bytes: group.bytes,
            file_offset: group.file_offset,
            chunks: group.chunks,
        });
        self.rows += file.rows.len();
        if self.first_offset.is_none() {
            self.first_offset = file.rows.first().map(|r| r.offset);
        }
        self.last_offset = file.rows.last().map_or(self.last_offset, |r| r.offset);
        Ok(())
    }

    /// The schema a row group is written with: each known column as first written, new
    /// columns (nullable: the row groups before them have none) added to the file.
    fn fit(&mut self, schema: &SchemaRef) -> Result<SchemaRef, EncodeError> {
        let mut fitted = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            match self.fields.iter().find(|f| f.name() == field.name()) {
                Some(known) if known.data_type() == field.data_type() => {
                    fitted.push(known.clone());
                }
                Some(known) => {
                    return Err(EncodeError::ColumnChanged {
                        column: field.name().clone(),
                        was: known.data_type().to_string(),
                        now: field.data_type().to_string(),
                    });
                }
                None => {
                    let field = match self.groups.is_empty() {
                        true => field.clone(),
                        false => Arc::new(field.as_ref().clone().with_nullable(true)),
                    };
                    self.fields.push(field.clone());
                    fitted.push(field);
                }
            }
        }
        Ok(Arc::new(Schema::new(fitted)))
    }

    /// Encodes `batches` as a one-row-group file and moves its column chunks to the end of
    /// the stream. `rows` gives the row count when there are no columns to count from.
    fn append_chunks(
        &mut self,
        schema: &SchemaRef,
        batches: &[RecordBatch],
        rows: Option<usize>,
    ) -> Result<WrittenGroup, EncodeError> {
        let props = WriterProperties::builder()
            .set_compression(self.compression())
            .set_max_row_group_row_count(None)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .build();
        let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;
        for batch in batches {
            writer.write(batch)?;
        }
        let bytes = writer.into_inner()?;
        // The file ends with its footer, the footer's length (4 bytes) and the magic.
        let n = bytes.len();
        let footer_start = n
            .checked_sub(8)
            .and_then(|end| {
                let len = bytes.get(end..end + 4)?;
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                end.checked_sub(len).filter(|&start| start >= MAGIC.len())
            })
            .ok_or_else(|| {
                parquet::errors::ParquetError::General(format!(
                    "the row group's encoding is not a Parquet file ({n} bytes)"
                ))
            })?;
        let metadata = ParquetMetaDataReader::decode_metadata(&bytes[footer_start..n - 8])?;
        let shift = self.position as i64 - MAGIC.len() as i64;
        self.out
            .extend_from_slice(&bytes[MAGIC.len()..footer_start]);
        self.position += (footer_start - MAGIC.len()) as u64;

        let descr = metadata.file_metadata().schema_descr();
        let mut chunks: HashMap<String, Vec<ColumnChunkMetaData>> = HashMap::new();
        let (mut group_rows, mut group_bytes) = (rows.unwrap_or(0) as i64, 0);
        for group in metadata.row_groups() {
            group_rows = group_rows.max(group.num_rows());
            group_bytes += group.total_byte_size();
            for (i, chunk) in group.columns().iter().enumerate() {
                let root = descr.get_column_root_idx(i);
                let name = schema.field(root).name().clone();
                let moved = chunk
                    .clone()
                    .into_builder()
                    .set_data_page_offset(chunk.data_page_offset() + shift)
                    .set_dictionary_page_offset(chunk.dictionary_page_offset().map(|o| o + shift))
                    .set_index_page_offset(chunk.index_page_offset().map(|o| o + shift))
                    .set_offset_index_offset(None)
                    .set_offset_index_length(None)
                    .set_column_index_offset(None)
                    .set_column_index_length(None)
                    .set_bloom_filter_offset(None)
                    .set_bloom_filter_length(None)
                    .build()?;
                chunks.entry(name).or_default().push(moved);
            }
        }
        Ok(WrittenGroup {
            rows: group_rows,
            bytes: group_bytes,
            file_offset: shift + MAGIC.len() as i64,
            chunks,
        })
    }

    fn compression(&self) -> parquet::basic::Compression {
        writer_properties(&self.settings, self.source(), 0, 0, 0)
            .compression(&parquet::schema::types::ColumnPath::from("_"))
    }

    /// Encoded bytes produced and not yet taken.
    pub fn ready(&self) -> usize {
        self.out.len()
    }

    /// Bytes of the file produced so far, taken or not.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// True once a row group is in the stream.
    pub fn started(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Takes the bytes produced since the last take.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Takes the first `n` bytes produced since the last take (all of them if fewer).
    pub fn take_front(&mut self, n: usize) -> Vec<u8> {
        let rest = self.out.split_off(n.min(self.out.len()));
        std::mem::replace(&mut self.out, rest)
    }

    /// Ends the file: `also` are columns it should carry even where no row has them (the
    /// topic's evolving schema); every column gets all-null chunks for the row groups written
    /// before it appeared; then the footer. What is left to take is the rest of the file.
    pub fn finish(&mut self, also: &FileSchema) -> Result<(), EncodeError> {
        for field in also.to_arrow().iter() {
            if !self.fields.iter().any(|f| f.name() == field.name()) {
                self.fields
                    .push(Arc::new(field.as_ref().clone().with_nullable(true)));
            }
        }
        let fields = self.fields.clone();
        let mut groups = std::mem::take(&mut self.groups);
        for group in &mut groups {
            let missing: Vec<FieldRef> = fields
                .iter()
                .filter(|f| !group.chunks.contains_key(f.name()))
                .cloned()
                .collect();
            if missing.is_empty() {
                continue;
            }
            let rows = group.rows as usize;
            let schema = Arc::new(Schema::new(missing));
            let columns: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), rows))
                .collect();
            let batch = RecordBatch::try_new_with_options(
                schema.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(rows)),
            )?;
            let nulls = self.append_chunks(&schema, &[batch], Some(rows))?;
            group.chunks.extend(nulls.chunks);
        }

        let schema = Schema::new(fields.clone());
        let descr = Arc::new(ArrowSchemaConverter::new().convert(&schema)?);
        let mut row_groups = Vec::with_capacity(groups.len());
        for (ordinal, mut group) in groups.into_iter().enumerate() {
            let mut columns = Vec::with_capacity(descr.num_columns());
            for field in &fields {
                columns.extend(group.chunks.remove(field.name()).unwrap_or_default());
            }
            row_groups.push(
                RowGroupMetaData::builder(descr.clone())
                    .set_num_rows(group.rows)
                    .set_total_byte_size(group.bytes)
                    .set_column_metadata(columns)
                    .set_ordinal(ordinal as i32)
                    .set_file_offset(group.file_offset)
                    .build()?,
            );
        }
        let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
        let first = self.first_offset.unwrap_or(0);
        let key_values = vec![
            kv("pail.version", PAIL_VERSION.to_string()),
            kv("pail.topic", self.topic.clone()),
            kv("pail.partition", self.partition.to_string()),
            kv("pail.first_offset", first.to_string()),
            kv("pail.last_offset", self.last_offset.to_string()),
            kv("pail.record_count", self.rows.to_string()),
            kv(
                parquet::arrow::ARROW_SCHEMA_META_KEY,
                encode_arrow_schema(&schema),
            ),
        ];
        let file = FileMetaData::new(
            1,
            self.rows as i64,
            Some(format!("pail version {PAIL_VERSION}")),
            Some(key_values),
            descr,
            None,
        );
        let metadata = ParquetMetaData::new(file, row_groups);
        let before = self.out.len();
        ParquetMetaDataWriter::new(&mut self.out, &metadata)
            .with_preserve_page_index_locations(false)
            .finish()?;
        self.position += (self.out.len() - before) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Segment;
    use crate::config::{Compression, MetadataColumns};
    use crate::schema::{Fields, InferRules};
    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn settings() -> ParquetSettings {
        ParquetSettings {
            compression: Compression::Zstd,
            row_group_size: 1000,
            row_group_bytes: 8 << 20,
            metadata: MetadataColumns::ALL,
        }
    }

    /// Rows `lines` as an open file, numbered from `first`, and their own inferred schema.
    fn group(lines: &[String], first: i64) -> (OpenFile, FileSchema) {
        let mut seg = Segment::new("t".into(), 0, 0, first);
        let rules = InferRules::default();
        for (i, l) in lines.iter().enumerate() {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).unwrap();
            seg.schema.merge_object(&v, &rules);
            seg.push_row("p", l.as_bytes(), None, first + i as i64, None);
        }
        let schema = FileSchema::Inferred(Arc::new(seg.schema.clone()));
        (seg.files.remove("p").unwrap(), schema)
    }

    fn read(bytes: Vec<u8>) -> (ParquetMetaData, Vec<RecordBatch>) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).unwrap();
        let metadata = builder.metadata().as_ref().clone();
        let batches = builder.build().unwrap().collect::<Result<_, _>>().unwrap();
        (metadata, batches)
    }

    #[test]
    fn columns_first_seen_in_later_row_groups_are_null_before_them() {
        let source = Provenance {
            topic: "t",
            partition: 3,
        };
        let mut stream = ParquetStream::new(&settings(), source);
        let mut taken = Vec::new();
        let blocks: [&dyn Fn(usize) -> String; 3] = [
            &|i| format!(r#"{{"id":{i}}}"#),
            &|i| format!(r#"{{"id":{i},"a":"x{i}"}}"#),
            &|i| format!(r#"{{"id":{i},"b":{{"c":{i}.5}}}}"#),
        ];
        for (g, make) in blocks.iter().enumerate() {
            let lines: Vec<String> = (g * 100..(g + 1) * 100).map(make).collect();
            let (file, schema) = group(&lines, (g * 100) as i64);
            stream.write_group(&file, &schema).unwrap();
            // Bytes leave as row groups are written, before the file ends.
            taken.extend(stream.take());
            assert!(stream.ready() == 0 && taken.len() as u64 == stream.position());
        }
        let topic = Fields::default();
        stream
            .finish(&FileSchema::Inferred(Arc::new(topic)))
            .unwrap();
        taken.extend(stream.take());
        assert_eq!(taken.len() as u64, stream.position());
        let (metadata, batches) = read(taken);
        assert_eq!(metadata.num_row_groups(), 3);
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 300);
        let column = |name: &str| -> Vec<ArrayRef> {
            batches
                .iter()
                .map(|b| b.column_by_name(name).unwrap().clone())
                .collect()
        };
        let ints = |name: &str| -> Vec<i64> {
            column(name)
                .iter()
                .flat_map(|c| {
                    let c = c.as_any().downcast_ref::<Int64Array>().unwrap();
                    c.values().to_vec()
                })
                .collect()
        };
        assert_eq!(ints("id"), (0..300).collect::<Vec<i64>>());
        let a: Vec<Option<String>> = column("a")
            .iter()
            .flat_map(|c| {
                let c = c.as_any().downcast_ref::<StringArray>().unwrap();
                c.iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>()
            })
            .collect();
        assert!(a[..100].iter().all(Option::is_none));
        assert_eq!(a[100].as_deref(), Some("x100"));
        assert!(a[200..].iter().all(Option::is_none));
        let b_nulls: usize = column("b").iter().map(|c| c.null_count()).sum();
        assert_eq!(b_nulls, 200);
        assert_eq!(
            ints(super::super::META_OFFSET),
            (0..300).collect::<Vec<i64>>()
        );
        let kv = metadata.file_metadata().key_value_metadata().unwrap();
        assert!(
            kv.iter()
                .any(|k| k.key == "pail.record_count" && k.value.as_deref() == Some("300"))
        );
    }

    #[test]
    fn a_column_whose_type_changes_is_refused_not_rewritten() {
        let source = Provenance {
            topic: "t",
            partition: 0,
        };
        let mut stream = ParquetStream::new(&settings(), source);
        let (file, schema) = group(&[r#"{"n":1}"#.to_string()], 0);
        stream.write_group(&file, &schema).unwrap();
        let (file, schema) = group(&[r#"{"n":1.5}"#.to_string()], 1);
        let err = stream.write_group(&file, &schema).unwrap_err();
        assert!(matches!(err, EncodeError::ColumnChanged { ref column, .. } if column == "n"));
    }

    #[test]
    fn topic_columns_no_row_had_are_carried_as_nulls() {
        let source = Provenance {
            topic: "t",
            partition: 0,
        };
        let mut stream = ParquetStream::new(&settings(), source);
        let (file, schema) = group(&[r#"{"n":1}"#.to_string(), r#"{"n":2}"#.to_string()], 0);
        stream.write_group(&file, &schema).unwrap();
        let mut topic = Fields::default();
        let v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"n":1,"old":2.5}"#).unwrap();
        topic.merge_object(&v, &InferRules::default());
        let mut bytes = stream.take();
        stream
            .finish(&FileSchema::Inferred(Arc::new(topic)))
            .unwrap();
        bytes.extend(stream.take());
        let (_, batches) = read(bytes);
        let old = batches[0].column_by_name("old").unwrap();
        assert!(old.as_any().downcast_ref::<Float64Array>().is_some());
        assert_eq!(old.null_count(), 2);
    }
}
