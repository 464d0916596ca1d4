//! Object keys: the key template, event-time extraction and key sanitising.
//!
//! Routing is a pure function of the record (its topic, partition, event time and fields), so
//! replaying the same records after a crash rebuilds exactly the same keys.

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::decode::json_type_name;

/// Longest encoded field value (or topic) kept verbatim in a key, in bytes; longer ones are
/// cut and hashed.
pub const MAX_VALUE_LEN: usize = 128;
/// What a missing, null or empty field renders as (the name Hive, Spark and Athena read as null).
pub const NULL_VALUE: &str = "__HIVE_DEFAULT_PARTITION__";

/// A problem with the template text itself, found when the config is loaded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unclosed '{{' in key template {0:?}")]
    Unclosed(String),
    #[error(
        "unknown placeholder {{{0}}} (use {{topic}}, {{partition}}, {{ts:FORMAT}} or {{field:NAME}})"
    )]
    UnknownPlaceholder(String),
    #[error("invalid strftime format {0:?} in {{ts:...}}")]
    BadTimeFormat(String),
    #[error("key template {0:?} has an empty, '.' or '..' path segment")]
    BadSegment(String),
}

/// Why a record could not be given a key: it is a bad record, not a bad config.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("record has no Kafka timestamp")]
    NoKafkaTimestamp,
    #[error("timestamp field {field:?} is missing or null")]
    MissingField { field: String },
    #[error("timestamp field {field:?}: {why}")]
    BadTimestamp { field: String, why: String },
}

/// Where a record's event time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampSource {
    /// The Kafka record timestamp (CreateTime or LogAppendTime).
    Kafka,
    /// A top-level or dotted field holding an RFC 3339 string or epoch milliseconds.
    Field(String),
}

impl TimestampSource {
    /// Whether extracting reads the record's top-level field `top` (see [`lookup`]).
    pub fn reads(&self, top: &str) -> bool {
        matches!(self, Self::Field(path) if path_reads(path, top))
    }

    /// Parses `kafka` or `field:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "kafka" => Ok(Self::Kafka),
            Some(("field", name)) if !name.is_empty() => Ok(Self::Field(name.to_string())),
            _ => Err(format!(
                "{text:?} is not a timestamp source (use \"kafka\" or \"field:NAME\")"
            )),
        }
    }

    /// The event time of one record.
    pub fn extract(
        &self,
        kafka_ts_ms: Option<i64>,
        value: &Map<String, Value>,
    ) -> Result<DateTime<Utc>, RouteError> {
        match self {
            Self::Kafka => kafka_ts_ms
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .ok_or(RouteError::NoKafkaTimestamp),
            Self::Field(name) => {
                let bad = |why: &str| RouteError::BadTimestamp {
                    field: name.clone(),
                    why: why.to_string(),
                };
                match lookup(value, name) {
                    None | Some(Value::Null) => Err(RouteError::MissingField {
                        field: name.clone(),
                    }),
                    Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| bad(&format!("{s:?} is not RFC 3339 ({e})"))),
                    Some(Value::Number(n)) => {
                        let ms = n
                            .as_i64()
                            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                            .ok_or_else(|| bad("number out of range"))?;
                        Utc.timestamp_millis_opt(ms)
                            .single()
                            .ok_or_else(|| bad("epoch milliseconds out of range"))
                    }
                    Some(other) => Err(bad(&format!(
                        "expected an RFC 3339 string or epoch milliseconds, got {}",
                        json_type_name(other)
                    ))),
                }
            }
        }
    }
}

/// Whether looking `path` up reads the top-level field `top`: the exact key, or the first
/// step of the dotted path.
fn path_reads(path: &str, top: &str) -> bool {
    path == top || path.split('.').next() == Some(top)
}

/// Finds `a.b.c` in nested objects; an exact top-level key wins over the dotted path.
pub fn lookup<'v>(object: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    if let Some(v) = object.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let first = object.get(parts.next()?)?;
    parts.try_fold(first, |v, part| v.get(part))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Topic,
    Partition,
    /// A `{ts:FORMAT}` placeholder: the format, and its items parsed once.
    Time(String, Vec<Item<'static>>),
    Field(String),
}

/// A parsed key template such as `{topic}/dt={ts:%Y-%m-%d}/hour={ts:%H}`, with the time zone
/// its `{ts:…}` placeholders render in (UTC unless [`KeyTemplate::in_zone`] says otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    text: String,
    parts: Vec<Part>,
    /// `None`: UTC, rendered without a zone lookup per record.
    zone: Option<Tz>,
}

impl KeyTemplate {
    /// Whether rendering reads the record's top-level field `top` (see [`lookup`]).
    pub fn reads(&self, top: &str) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Field(path) if path_reads(path, top)))
    }

    /// Parses and checks a template; leading and trailing `/` are ignored.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let trimmed = text.trim_matches('/');
        let mut parts = Vec::new();
        let mut rest = trimmed;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(text.to_string()))?;
            let inner = &rest[open + 1..open + close];
            parts.push(match inner.split_once(':') {
                None if inner == "topic" => Part::Topic,
                None if inner == "partition" => Part::Partition,
                Some(("ts", fmt)) => {
                    let items = StrftimeItems::new(fmt).parse_to_owned();
                    match items {
                        Ok(items) if !fmt.is_empty() => Part::Time(fmt.to_string(), items),
                        _ => return Err(TemplateError::BadTimeFormat(fmt.to_string())),
                    }
                }
                Some(("field", name)) if !name.is_empty() => Part::Field(name.to_string()),
                _ => return Err(TemplateError::UnknownPlaceholder(inner.to_string())),
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        let template = Self {
            text: trimmed.to_string(),
            parts,
            zone: None,
        };
        // A sample rendering catches literal segments such as `a//b` or `../x`; placeholders
        // always render to non-empty, dot-safe text.
        let sample = template.render("t", 0, DateTime::UNIX_EPOCH, &Map::new());
        if !sample.is_empty()
            && sample
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(TemplateError::BadSegment(text.to_string()));
        }
        Ok(template)
    }

    /// The template as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Renders `{ts:…}` in `zone` (an IANA zone, e.g. `America/New_York`): a record's path is
    /// still a function of the record alone, its event time shown as the zone's wall clock.
    /// Across a daylight-saving change the local hour repeats (the hour after 01:59 EDT is
    /// 01:00 EST) or is skipped; `%z` in the format tells the repeated hours apart.
    pub fn in_zone(mut self, zone: Tz) -> Self {
        self.zone = (zone != Tz::UTC).then_some(zone);
        self
    }

    /// The time zone `{ts:…}` renders in.
    pub fn zone(&self) -> Tz {
        self.zone.unwrap_or(Tz::UTC)
    }

    /// The directory part of an object key for one record. Field values are sanitised.
    /// The longest path segment (between `/`) this template can render, in bytes: literals as
    /// written, topics and field values at their sanitised cap, times rendered on a date that
    /// spells every name out at length.
    pub fn longest_segment(&self) -> usize {
        // A Wednesday in September, late in the day; and the last year chrono's formats take
        // four digits for, whose `%s` is longer.
        // Local wall-clock times in the template's zone, so that a zone's offset cannot move
        // them to a shorter day or month.
        let zone = self.zone();
        let long_dates: Vec<DateTime<Tz>> = [(2000, 9, 27), (9999, 9, 29)]
            .into_iter()
            .filter_map(|(y, m, d)| chrono::NaiveDate::from_ymd_opt(y, m, d))
            .filter_map(|d| d.and_hms_nano_opt(23, 59, 59, 999_999_999))
            .filter_map(|t| zone.from_local_datetime(&t).earliest())
            .collect();
        let (mut longest, mut current) = (0, 0);
        for part in &self.parts {
            let text = match part {
                Part::Literal(s) => s.clone(),
                Part::Topic | Part::Field(_) => "x".repeat(MAX_VALUE_LEN),
                Part::Partition => i32::MIN.to_string(),
                Part::Time(fmt, _) => long_dates
                    .iter()
                    .map(|t| t.format(fmt).to_string())
                    .max_by_key(String::len)
                    .unwrap_or_default(),
            };
            let mut pieces = text.split('/');
            if let Some(first) = pieces.next() {
                current += first.len();
            }
            for piece in pieces {
                longest = longest.max(current);
                current = piece.len();
            }
        }
        longest.max(current)
    }

    pub fn render(
        &self,
        topic: &str,
        partition: i32,
        ts: DateTime<Utc>,
        value: &Map<String, Value>,
    ) -> String {
        let mut out = String::new();
        self.render_into(&mut out, topic, partition, ts, value);
        out
    }

    /// [`KeyTemplate::render`] appended to `out`, whose room is reused.
    pub fn render_into(
        &self,
        out: &mut String,
        topic: &str,
        partition: i32,
        ts: DateTime<Utc>,
        value: &Map<String, Value>,
    ) {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Topic => push_sanitized(out, topic),
                Part::Partition => {
                    let _ = write!(out, "{partition}");
                }
                // The format was validated in `parse`, so writing cannot fail.
                Part::Time(_, items) => match &self.zone {
                    None => {
                        let _ = write!(out, "{}", ts.format_with_items(items.iter()));
                    }
                    Some(zone) => {
                        let local = ts.with_timezone(zone);
                        let _ = write!(out, "{}", local.format_with_items(items.iter()));
                    }
                },
                Part::Field(name) => match lookup(value, name) {
                    None | Some(Value::Null) => out.push_str(NULL_VALUE),
                    Some(Value::String(s)) => push_sanitized(out, s),
                    Some(other) => out.push_str(&sanitize(&other.to_string())),
                },
            }
        }
    }
}

/// Makes a value safe as one key segment: bytes outside `[A-Za-z0-9._~-]` are percent-encoded,
/// `.` and `..` are encoded, empty becomes [`NULL_VALUE`], and values longer than 128 encoded
/// bytes are cut and suffixed with `~` and a 64-bit FNV-1a hash of the whole value, so distinct
/// values stay distinct and no key escapes its prefix or exceeds S3's 1024-byte limit.
pub fn sanitize(value: &str) -> String {
    if value.is_empty() {
        return NULL_VALUE.to_string();
    }
    if value == "." || value == ".." {
        return value.replace('.', "%2E");
    }
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.len() > MAX_VALUE_LEN {
        let mut cut = MAX_VALUE_LEN - 17;
        // Never split a %XX escape.
        while out[..cut].ends_with('%') || out[..cut.saturating_sub(1)].ends_with('%') {
            cut -= 1;
        }
        out.truncate(cut);
        let _ = write!(out, "~{:016x}", fnv1a(value.as_bytes()));
    }
    out
}

/// Appends [`sanitize`]`(value)` to `out`, without a copy for a value that needs no change.
fn push_sanitized(out: &mut String, value: &str) {
    let safe = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
    if !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && value != "."
        && value != ".."
        && value.as_bytes().iter().all(safe)
    {
        out.push_str(value);
    } else {
        out.push_str(&sanitize(value));
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn values_are_appended_as_sanitize_makes_them() {
        let long = "a".repeat(MAX_VALUE_LEN);
        let longer = "a".repeat(MAX_VALUE_LEN + 1);
        for value in ["", ".", "..", "a.b", "x y", "é", "a-b_c~d", &long, &longer] {
            let mut out = "p/".to_string();
            push_sanitized(&mut out, value);
            assert_eq!(out, format!("p/{}", sanitize(value)), "{value:?}");
        }
    }

    fn ts() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-03-05T07:08:09Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_longest_segment_counts_values_at_their_cap() {
        let t = KeyTemplate::parse("{topic}/dt={ts:%Y-%m-%d}/hour={ts:%H}").unwrap();
        assert_eq!(t.longest_segment(), MAX_VALUE_LEN);
        let t = KeyTemplate::parse("c={field:country}-{field:city}/x").unwrap();
        assert_eq!(t.longest_segment(), 2 + 2 * MAX_VALUE_LEN + 1);
        let t = KeyTemplate::parse("month={ts:%B}").unwrap();
        assert_eq!(t.longest_segment(), "month=September".len());
        let t = KeyTemplate::parse("epoch={ts:%s}").unwrap();
        assert_eq!(t.longest_segment(), "epoch=253402300799".len());
    }

    #[test]
    fn renders_hive_style_paths() {
        let t = KeyTemplate::parse("{topic}/dt={ts:%Y-%m-%d}/hour={ts:%H}").unwrap();
        assert_eq!(
            t.render("events", 3, ts(), &obj(json!({}))),
            "events/dt=2024-03-05/hour=07"
        );
        let t = KeyTemplate::parse("/p={partition}/c={field:user.country}/").unwrap();
        assert_eq!(
            t.render("e", 3, ts(), &obj(json!({"user": {"country": "DE"}}))),
            "p=3/c=DE"
        );
        assert_eq!(
            t.render("e", 3, ts(), &obj(json!({}))),
            format!("p=3/c={NULL_VALUE}")
        );
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(matches!(
            KeyTemplate::parse("{nope}"),
            Err(TemplateError::UnknownPlaceholder(_))
        ));
        assert!(matches!(
            KeyTemplate::parse("{ts:%Q}"),
            Err(TemplateError::BadTimeFormat(_))
        ));
        assert!(matches!(
            KeyTemplate::parse("{topic"),
            Err(TemplateError::Unclosed(_))
        ));
        assert!(matches!(
            KeyTemplate::parse("a/../{topic}"),
            Err(TemplateError::BadSegment(_))
        ));
        assert!(matches!(
            KeyTemplate::parse("a//b"),
            Err(TemplateError::BadSegment(_))
        ));
    }

    #[test]
    fn hostile_field_values_stay_in_one_segment() {
        for hostile in ["../../x", "/", "..", ".", "", "a\u{0}b\nc", "ü/ä"] {
            let s = sanitize(hostile);
            assert!(!s.contains('/'), "{hostile:?} -> {s}");
            assert!(s != "." && s != ".." && !s.is_empty(), "{hostile:?} -> {s}");
            assert!(
                s.bytes().all(|b| b.is_ascii_graphic()),
                "{hostile:?} -> {s}"
            );
        }
        let long = "x/".repeat(1000);
        let s = sanitize(&long);
        assert!(s.len() <= MAX_VALUE_LEN, "{}", s.len());
        assert_ne!(s, sanitize(&"x/".repeat(999)));
    }

    #[test]
    fn timestamps_from_kafka_and_fields() {
        let v = obj(
            json!({"ts": "2024-03-05T08:08:09+01:00", "ms": 1_709_622_489_000_i64, "bad": "soon"}),
        );
        assert_eq!(
            TimestampSource::parse("field:ts")
                .unwrap()
                .extract(None, &v)
                .unwrap(),
            ts()
        );
        assert_eq!(
            TimestampSource::Field("ms".into())
                .extract(None, &v)
                .unwrap(),
            ts()
        );
        assert!(matches!(
            TimestampSource::Field("bad".into()).extract(None, &v),
            Err(RouteError::BadTimestamp { .. })
        ));
        assert!(matches!(
            TimestampSource::Field("gone".into()).extract(None, &v),
            Err(RouteError::MissingField { .. })
        ));
        assert_eq!(
            TimestampSource::Kafka
                .extract(Some(1_709_622_489_000), &v)
                .unwrap(),
            ts()
        );
        assert_eq!(
            TimestampSource::Kafka.extract(None, &v),
            Err(RouteError::NoKafkaTimestamp)
        );
        assert!(TimestampSource::parse("processing").is_err());
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn ts_placeholders_render_in_the_configured_zone_across_daylight_saving_changes() {
        let t = KeyTemplate::parse("dt={ts:%Y-%m-%d}/hour={ts:%H}/off={ts:%z}")
            .unwrap()
            .in_zone(chrono_tz::America::New_York);
        let path = |ts: &str| t.render("t", 0, at(ts), &Map::new());
        // Late on 31 December in New York is already 1 January in UTC.
        assert_eq!(
            path("2026-01-01T04:30:00Z"),
            "dt=2025-12-31/hour=23/off=-0500"
        );
        // Spring forward (8 March 2026, 02:00 EST -> 03:00 EDT): no hour 02.
        assert_eq!(
            path("2026-03-08T06:59:59Z"),
            "dt=2026-03-08/hour=01/off=-0500"
        );
        assert_eq!(
            path("2026-03-08T07:00:00Z"),
            "dt=2026-03-08/hour=03/off=-0400"
        );
        // Fall back (1 November 2026, 02:00 EDT -> 01:00 EST): hour 01 twice, one UTC hour
        // apart, told apart by the offset.
        assert_eq!(
            path("2026-11-01T05:30:00Z"),
            "dt=2026-11-01/hour=01/off=-0400"
        );
        assert_eq!(
            path("2026-11-01T06:30:00Z"),
            "dt=2026-11-01/hour=01/off=-0500"
        );
        assert_eq!(
            path("2026-11-01T07:30:00Z"),
            "dt=2026-11-01/hour=02/off=-0500"
        );
        // UTC, the default, is unchanged.
        let utc = KeyTemplate::parse("dt={ts:%Y-%m-%d}/hour={ts:%H}").unwrap();
        assert_eq!(
            utc.render("t", 0, at("2026-11-01T05:30:00Z"), &Map::new()),
            "dt=2026-11-01/hour=05"
        );
        assert_eq!(utc.clone().in_zone(chrono_tz::UTC), utc);
    }

    #[test]
    fn the_longest_segment_is_measured_on_the_zones_wall_clock() {
        // Far east of UTC, 23:59 UTC on a Wednesday is a Thursday: the longest day name must
        // still be counted.
        let t = KeyTemplate::parse("day={ts:%A}")
            .unwrap()
            .in_zone(chrono_tz::Pacific::Kiritimati);
        assert_eq!(t.longest_segment(), "day=Wednesday".len());
    }
}
