//! A sealed segment → the objects that hold it: one Parquet object per output path, plus one
//! NDJSON dead-letter object when the segment has bad records.

use std::sync::Arc;

use bytes::Bytes;

use crate::buffer::Segment;
use crate::config::ParquetSettings;
use crate::encode::{EncodeError, PAIL_VERSION, Provenance, encode_parquet};
use crate::partition::sanitize;
use crate::protocol::Lineage;
use crate::schema::FileSchema;
use crate::store::ObjectMetadata;

/// One object to upload.
#[derive(Debug, Clone)]
pub struct PlannedObject {
    pub key: String,
    pub body: Bytes,
    pub metadata: ObjectMetadata,
}

/// Joins non-empty key parts with `/`.
pub fn join_key(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
}

/// The object file name for a segment: `{topic}+{partition}+{lineage}+{start:020}.{ext}`. The
/// lineage tells apart the lives of a partition's offsets (see [`Lineage`]); a segment sealed
/// outside the protocol (benchmarks, tests) has none.
pub fn object_name(
    topic: &str,
    partition: i32,
    lineage: Option<Lineage>,
    start: i64,
    ext: &str,
) -> String {
    match lineage {
        Some(l) => format!("{}+{partition}+{l}+{start:020}.{ext}", sanitize(topic)),
        None => format!("{}+{partition}+{start:020}.{ext}", sanitize(topic)),
    }
}

/// The user metadata of a streamed object, whose upload is created before its last record
/// is known: what is known then (its Parquet footer holds the rest).
pub fn streamed_metadata(seg: &Segment, first: i64) -> ObjectMetadata {
    let mut m = metadata(seg, first, 0, 0);
    m.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "pail-last-offset" | "pail-record-count" | "pail-segment"
        )
    });
    m
}

fn metadata(seg: &Segment, first: i64, last: i64, count: usize) -> ObjectMetadata {
    vec![
        ("pail-version".into(), PAIL_VERSION.into()),
        ("pail-topic".into(), seg.topic.to_string()),
        ("pail-partition".into(), seg.partition.to_string()),
        ("pail-first-offset".into(), first.to_string()),
        ("pail-last-offset".into(), last.to_string()),
        ("pail-record-count".into(), count.to_string()),
        ("pail-segment".into(), format!("{}-{}", seg.start, seg.end)),
        (
            "pail-lineage".into(),
            seg.lineage.map(|l| l.to_string()).unwrap_or_default(),
        ),
    ]
}

/// Encodes every object of a segment. CPU-bound: run it off the async threads.
pub fn plan_objects(
    seg: &Segment,
    prefix: &str,
    parquet: &ParquetSettings,
) -> Result<Vec<PlannedObject>, EncodeError> {
    let mut objects = Vec::with_capacity(seg.files.len() + 1);
    let name = object_name(&seg.topic, seg.partition, seg.lineage, seg.start, "parquet");
    // The pipeline sets the schema when it seals; a segment sealed elsewhere is written with
    // its own.
    let own;
    let schema = match &seg.written_as {
        Some(schema) => schema,
        None => {
            own = FileSchema::Inferred(Arc::new(seg.schema.clone()));
            &own
        }
    };
    for (path, file) in &seg.files {
        let body = encode_parquet(
            file,
            schema,
            Provenance {
                topic: &seg.topic,
                partition: seg.partition,
            },
            parquet,
        )?;
        let first = file.rows.first().map_or(seg.start, |r| r.offset);
        let last = file.rows.last().map_or(seg.end, |r| r.offset);
        objects.push(PlannedObject {
            key: join_key(&[prefix, path, &name]),
            body: Bytes::from(body),
            metadata: metadata(seg, first, last, file.rows.len()),
        });
    }
    if seg.dead_letter_count > 0 {
        let name = object_name(&seg.topic, seg.partition, seg.lineage, seg.start, "ndjson");
        objects.push(PlannedObject {
            key: join_key(&[prefix, "_errors", &sanitize(&seg.topic), &name]),
            body: Bytes::from(seg.dead_letters.clone()),
            metadata: metadata(seg, seg.start, seg.end, seg.dead_letter_count as usize),
        });
    }
    Ok(objects)
}
