//! Throughput of the hot path on synthetic 1 KB events, reported as MB/s of JSON and as a
//! ratio to plain `serde_json` parsing of the same bytes measured in the same run (absolute
//! numbers drift on shared machines; ratios taken together do not).
//!
//! Run: `cargo bench --bench pipeline` (set `PAIL_BENCH_MB` to change the input size).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use pail::buffer::Segment;
use pail::config::{Compression, MetadataColumns, ParquetSettings};
use pail::encode::{Provenance, encode_parquet};
use pail::run::{RunOptions, run};
use pail::schema::{Fields, InferRules, SchemaSettings};
use tokio_util::sync::CancellationToken;

fn events(target_bytes: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut total = 0;
    let mut i: u64 = 0;
    while total < target_bytes {
        let line = format!(
            r#"{{"event_id":"evt-{i:012}","ts":"2026-11-20T{:02}:{:02}:{:02}.123Z","type":"{}","user":{{"id":"u-{:05}","country":"{}","plan":"pro","traits":{{"age":{},"score":{}.25}}}},"context":{{"ip":"203.0.113.{}","user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","page":{{"path":"/docs/page-{}","referrer":"https://example.com/search?q=term-{}","title":"A page title that is moderately long for realism"}}}},"properties":{{"amount":{}.99,"currency":"EUR","items":[{{"sku":"SKU-{}","qty":{}}},{{"sku":"SKU-{}","qty":1}}]}},"tags":["beta","mobile","returning"],"session":"sess-{:016x}"}}"#,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            ["page_view", "purchase", "search"][(i % 3) as usize],
            i % 50_000,
            ["DE", "US", "FR", "JP"][(i % 4) as usize],
            18 + i % 60,
            i % 100,
            i % 250,
            i % 1000,
            i % 777,
            i % 500,
            i % 900,
            1 + i % 3,
            i % 901,
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        total += line.len() + 1;
        out.push(line);
        i += 1;
    }
    out
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    let mb: usize = std::env::var("PAIL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let lines = events(mb << 20);
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    println!(
        "input: {} events, {:.1} MB, avg {} B/event",
        lines.len(),
        bytes as f64 / 1e6,
        bytes / lines.len()
    );

    let baseline = best_of(3, || {
        lines
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .map(|_| 1)
                    .unwrap_or(0)
            })
            .sum::<usize>()
    });

    let schema_settings = SchemaSettings::default();
    let build = || {
        let mut seg = Segment::new("events".into(), 0, 0, 0);
        for (i, l) in lines.iter().enumerate() {
            // As the pipeline does: decode with the record limits, then admit to the schema.
            let obj = pail::decode::decode(
                Some(l.as_bytes()),
                schema_settings.max_record_bytes,
                schema_settings.max_depth,
            )
            .unwrap_or_default();
            if schema_settings.admit(&mut seg.schema, &obj).is_ok() {
                seg.push_row("p", l.as_bytes(), None, i as i64, Some(1_763_600_000_000));
            }
        }
        seg
    };
    let buffer = best_of(3, build);
    // What a Kafka partition's reader does for each record off the run loop (decode, and the
    // record's own schema, equal shapes shared), then what is left for the run loop: admit by
    // shape and buffer.
    let shapes = |lines: &[String]| {
        let mut last = None;
        lines
            .iter()
            .map(|l| {
                let obj = pail::decode::decode(
                    Some(l.as_bytes()),
                    schema_settings.max_record_bytes,
                    schema_settings.max_depth,
                )
                .unwrap_or_default();
                schema_settings.fit(&obj, &mut last)
            })
            .collect::<Vec<_>>()
    };
    let reader_decoding = best_of(3, || shapes(&lines));
    // What the reader does now: a record of the shape before is recognised as it is parsed,
    // decoding only the field the route reads (`ts`); others are decoded whole.
    let reads = |top: &str| top == "ts";
    let reader = best_of(3, || {
        let mut last = None;
        lines
            .iter()
            .map(
                |l| match schema_settings.fit_payload(Some(l.as_bytes()), &last, &reads) {
                    Some((kept, fit)) => (kept, fit),
                    None => {
                        let obj = pail::decode::decode(
                            Some(l.as_bytes()),
                            schema_settings.max_record_bytes,
                            schema_settings.max_depth,
                        )
                        .unwrap_or_default();
                        let fit = schema_settings.fit(&obj, &mut last);
                        (obj, fit)
                    }
                },
            )
            .count()
    });
    let fits = shapes(&lines);
    let run_loop = best_of(3, || {
        let mut seg = Segment::new("events".into(), 0, 0, 0);
        for (i, (l, fit)) in lines.iter().zip(&fits).enumerate() {
            let again = || {
                pail::decode::decode(
                    Some(l.as_bytes()),
                    schema_settings.max_record_bytes,
                    schema_settings.max_depth,
                )
                .map_err(|e| e.to_string())
            };
            if schema_settings
                .admit_fit(&mut seg.schema, &mut seg.admitted, fit, again)
                .is_ok()
            {
                seg.push_row("p", l.as_bytes(), None, i as i64, Some(1_763_600_000_000));
            }
        }
        seg
    });
    let mut seg = build();
    let file = seg.files.remove("p").unwrap_or_default();
    let file_schema =
        schema_settings.file_schema(&mut std::sync::Arc::new(Fields::default()), &seg.schema);
    let settings = ParquetSettings {
        compression: Compression::Zstd,
        row_group_size: 128 * 1024,
        row_group_bytes: 8 << 20,
        metadata: MetadataColumns::ALL,
    };
    let source = Provenance {
        topic: "events",
        partition: 0,
    };
    let mut parquet_len = 0;
    let encode = best_of(3, || {
        let out = encode_parquet(&file, &file_schema, source, &settings).unwrap_or_default();
        parquet_len = out.len();
    });
    // The same file with timestamps kept as strings: what typing `ts` as a timestamp costs.
    let mut untimed = Fields::default();
    let rules = InferRules {
        temporal_strings: false,
        ..InferRules::default()
    };
    let payloads = file.payloads().expect("nothing is packed here");
    for i in 0..file.rows.len() {
        if let Ok(obj) = serde_json::from_slice(&payloads[file.payload_range(i)]) {
            untimed.merge_object(&obj, &rules);
        }
    }
    let untimed_schema =
        schema_settings.file_schema(&mut std::sync::Arc::new(untimed), &Fields::default());
    let encode_strings = best_of(3, || {
        encode_parquet(&file, &untimed_schema, source, &settings).unwrap_or_default()
    });

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let end_to_end = best_of(2, || {
        let out = tempfile::tempdir_in(dir.path()).unwrap();
        let text = format!(
            "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"b\"\nurl = \"file://{}\"\n\
             timestamp = \"field:ts\"\n[destinations.rotation]\nmax_bytes = \"128MiB\"\n",
            input.display(),
            out.path().display()
        );
        let settings = pail::config::parse(Path::new("bench.toml"), &text, &|_| None).unwrap();
        rt.block_on(run(
            settings,
            RunOptions {
                once: true,
                ..Default::default()
            },
            CancellationToken::new(),
        ))
        .unwrap()
    });

    println!("{:<38} {:>9} {:>12}", "stage", "MB/s", "vs serde_json");
    for (name, d) in [
        ("serde_json::Value parse (baseline)", baseline),
        ("ingest: parse + infer + buffer", buffer),
        ("reader, decoding every record", reader_decoding),
        ("reader: scan against the shape before", reader),
        ("loop: admit by shape + buffer", run_loop),
        ("encode: arrow-json + Parquet zstd", encode),
        ("encode, timestamps left as strings", encode_strings),
        ("end to end: file -> local Parquet", end_to_end),
    ] {
        println!(
            "{name:<38} {:>9.1} {:>11.2}x",
            mbps(bytes, d),
            baseline.as_secs_f64() / d.as_secs_f64()
        );
    }
    println!(
        "parquet size: {:.1} MB ({:.1}x smaller than JSON)",
        parquet_len as f64 / 1e6,
        bytes as f64 / parquet_len.max(1) as f64
    );
}
