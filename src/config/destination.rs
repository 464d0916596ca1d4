//! Validation of one `[[destinations]]` table: URL, layout, policies, rotation, Parquet and
//! credentials.

use std::path::PathBuf;
use std::time::Duration;

use super::auth::{AuthSettings, auth};
use super::connection::{
    Connection, Provider, WriteOptions, connection, s3_only_keys, write_options,
};
use super::raw::RawDestination;
use super::settings::{
    BadRecordPolicy, Compression, DEFAULT_KEY_TEMPLATE, DestinationSettings, EnvLookup, Location,
    ParquetSettings, Problems, RotationSettings, UploadSettings,
};
use super::units::{parse_duration, parse_size};
use crate::partition::{KeyTemplate, MAX_VALUE_LEN, TimestampSource};

/// The longest file or directory name a local file system holds (ext4, XFS, APFS, NTFS).
const MAX_LOCAL_NAME: usize = 255;

pub(super) fn destination(
    raw: &RawDestination,
    at: &str,
    env: EnvLookup<'_>,
    p: &mut Problems,
) -> Option<DestinationSettings> {
    let before = p.0.len();
    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        p.push(
            format!("{at}.name"),
            "use letters, digits, '-' and '_' only",
        );
    }
    let url = match (&raw.url, env("S3_BUCKET_NAME")) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(bucket)) => Some(format!("s3://{bucket}")),
        (None, None) => {
            p.push(
                format!("{at}.url"),
                "required: s3://bucket/prefix or file://dir (or set S3_BUCKET_NAME)",
            );
            None
        }
    };
    let location = url.and_then(|url| {
        parse_url(&url)
            .map_err(|m| p.push(format!("{at}.url"), m))
            .ok()
    });
    let zone = match raw.timezone.as_deref() {
        None => Some(chrono_tz::Tz::UTC),
        Some(name) => name
            .parse::<chrono_tz::Tz>()
            .map_err(|_| {
                p.push(
                    format!("{at}.timezone"),
                    format!(
                        "unknown time zone {name:?}: use an IANA name such as \"UTC\", \
                         \"Europe/Berlin\" or \"America/New_York\""
                    ),
                )
            })
            .ok(),
    };
    let key_template =
        KeyTemplate::parse(raw.key_template.as_deref().unwrap_or(DEFAULT_KEY_TEMPLATE))
            .map_err(|e| p.push(format!("{at}.key_template"), e.to_string()))
            .ok()
            .map(|t| t.in_zone(zone.unwrap_or(chrono_tz::Tz::UTC)));
    let timestamp = TimestampSource::parse(raw.timestamp.as_deref().unwrap_or("kafka"))
        .map_err(|m| p.push(format!("{at}.timestamp"), m))
        .ok();
    let on_bad_record = match raw.on_bad_record.as_deref().unwrap_or("dead_letter") {
        "dead_letter" => Some(BadRecordPolicy::DeadLetter),
        "fail" => Some(BadRecordPolicy::Fail),
        "skip" => Some(BadRecordPolicy::Skip),
        other => {
            p.push(
                format!("{at}.on_bad_record"),
                format!("{other:?} is not a policy (use \"dead_letter\", \"fail\" or \"skip\")"),
            );
            None
        }
    };
    if let (Some(Location::Local { .. }), Some(template)) = (&location, &key_template) {
        // A name the file system cannot hold would fail every upload of the path for good.
        let longest = template.longest_segment();
        if longest > MAX_LOCAL_NAME {
            p.push(
                format!("{at}.key_template"),
                format!(
                    "a path segment can render up to {longest} bytes (field values and topics \
                     count {MAX_VALUE_LEN} each); a local file system holds names of at most \
                     {MAX_LOCAL_NAME}"
                ),
            );
        }
    }
    let is_s3 = matches!(location, Some(Location::S3 { .. }));
    // The store is AWS's: provider "aws", or neither a provider nor an endpoint.
    let aws_store = match raw.provider.as_deref() {
        Some(provider) => provider == "aws",
        None => raw.endpoint.is_none(),
    };
    let auth = if is_s3 {
        auth(
            &raw.auth,
            &format!("{at}.auth"),
            &raw.name,
            aws_store,
            env,
            p,
        )
    } else {
        Some(AuthSettings::Default)
    };
    let (conn, write) = if is_s3 {
        (connection(raw, at, env, p), write_options(raw, at, p))
    } else if location.is_none() {
        // The URL is already reported; which keys apply is unknown.
        (None, WriteOptions::default())
    } else {
        for (key, set) in s3_only_keys(raw) {
            if set {
                p.push(format!("{at}.{key}"), "only used with s3:// destinations");
            }
        }
        let local = Connection {
            provider: Provider::Aws,
            endpoint: None,
            region: String::new(),
            path_style: false,
        };
        (Some(local), WriteOptions::default())
    };
    let rotation = {
        let r = &raw.rotation;
        let max_bytes = match &r.max_bytes {
            None => Some(None),
            Some(toml::Value::Integer(i)) if *i > 0 => Some(Some(*i as u64)),
            Some(toml::Value::String(s)) => parse_size(s)
                .map_err(|m| p.push(format!("{at}.rotation.max_bytes"), m))
                .ok()
                .map(Some),
            Some(_) => {
                p.push(
                    format!("{at}.rotation.max_bytes"),
                    "expected a size like \"128MiB\"",
                );
                None
            }
        };
        let target_file_size = parse_size(r.target_file_size.as_deref().unwrap_or("128MiB"))
            .map_err(|m| p.push(format!("{at}.rotation.target_file_size"), m))
            .ok();
        let max_age = parse_duration(r.max_age.as_deref().unwrap_or("5m"))
            .map_err(|m| p.push(format!("{at}.rotation.max_age"), m))
            .ok();
        let max_records = r.max_records.unwrap_or(1_000_000);
        let max_open_paths = r.max_open_paths.unwrap_or(64) as usize;
        for (key, zero) in [
            ("max_records", max_records == 0),
            ("max_bytes", max_bytes == Some(Some(0))),
            ("target_file_size", target_file_size == Some(0)),
            ("max_age", max_age == Some(Duration::ZERO)),
            ("max_open_paths", max_open_paths == 0),
        ] {
            if zero {
                p.push(format!("{at}.rotation.{key}"), "must be greater than zero");
            }
        }
        match (max_bytes, max_age, target_file_size) {
            (Some(max_bytes), Some(max_age), Some(target_file_size)) => Some(RotationSettings {
                max_records,
                max_bytes,
                target_file_size,
                max_age,
                max_open_paths,
            }),
            _ => None,
        }
    };
    let compression = match raw.parquet.compression.as_deref().unwrap_or("zstd") {
        "zstd" => Some(Compression::Zstd),
        "snappy" => Some(Compression::Snappy),
        "none" => Some(Compression::None),
        other => {
            p.push(
                format!("{at}.parquet.compression"),
                format!("{other:?} is not supported (use \"zstd\", \"snappy\" or \"none\")"),
            );
            None
        }
    };
    let row_group_size = raw.parquet.row_group_size.unwrap_or(128 * 1024) as usize;
    if row_group_size == 0 {
        p.push(
            format!("{at}.parquet.row_group_size"),
            "must be greater than zero",
        );
    }
    let row_group_bytes = parse_size(raw.parquet.row_group_bytes.as_deref().unwrap_or("8MiB"))
        .map_err(|m| p.push(format!("{at}.parquet.row_group_bytes"), m))
        .ok()
        .filter(|&b| {
            if b < MIN_ROW_GROUP_BYTES {
                p.push(
                    format!("{at}.parquet.row_group_bytes"),
                    "must be at least 64KiB",
                );
            }
            b >= MIN_ROW_GROUP_BYTES
        });
    let upload = upload(raw, at, p);
    // An object streams out in parts of `part_size`, at most 10,000 of them (S3's limit);
    // the footer and a few row groups past the target ride in the last ones.
    if let (Some(r), Some(u)) = (&rotation, &upload)
        && r.target_file_size > u.part_size.saturating_mul(MAX_PARTS / 2)
    {
        p.push(
            format!("{at}.rotation.target_file_size"),
            format!(
                "must be at most {} parts of upload.part_size (S3 takes 10,000 parts of an \
                 object); raise part_size",
                MAX_PARTS / 2
            ),
        );
    }
    let schema = super::schema::schema(raw, at, p);
    let metadata = super::schema::metadata_columns(&raw.schema, at, p);
    if p.0.len() != before {
        return None;
    }
    let conn = conn?;
    Some(DestinationSettings {
        name: raw.name.clone(),
        topics: raw.topics.clone().unwrap_or_default(),
        location: location?,
        provider: conn.provider,
        region: conn.region,
        endpoint: conn.endpoint,
        path_style: conn.path_style,
        write,
        key_template: key_template?,
        timezone: zone?,
        timestamp: timestamp?,
        on_bad_record: on_bad_record?,
        overwrite_protection: raw.overwrite_protection.unwrap_or(true),
        preflight: raw.preflight.unwrap_or(true),
        auth: auth?,
        rotation: rotation?,
        parquet: ParquetSettings {
            compression: compression?,
            row_group_size,
            row_group_bytes: row_group_bytes? as usize,
            metadata: metadata?,
        },
        upload: upload?,
        schema: schema?,
    })
}

/// Smaller row groups cost more in footers and page headers than they save in memory.
const MIN_ROW_GROUP_BYTES: u64 = 64 << 10;

/// S3 takes parts of 5 MiB to 5 GiB, at most 10,000 of them.
const MAX_PARTS: u64 = 10_000;
const MIN_PART_SIZE: u64 = 5 << 20;
const MAX_PART_SIZE: u64 = 5 << 30;

fn upload(raw: &RawDestination, at: &str, p: &mut Problems) -> Option<UploadSettings> {
    let default = UploadSettings::default();
    let size = |key: &str, v: &Option<String>, default: u64, p: &mut Problems| match v {
        None => Some(default),
        Some(s) => parse_size(s)
            .map_err(|m| p.push(format!("{at}.upload.{key}"), m))
            .ok(),
    };
    let threshold = size(
        "multipart_threshold",
        &raw.upload.multipart_threshold,
        default.multipart_threshold,
        p,
    )?;
    let part_size = size("part_size", &raw.upload.part_size, default.part_size, p)?;
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
        p.push(
            format!("{at}.upload.part_size"),
            "must be between 5MiB and 5GiB (S3's part size limits)",
        );
        return None;
    }
    if threshold < part_size {
        p.push(
            format!("{at}.upload.multipart_threshold"),
            "must be at least part_size",
        );
        return None;
    }
    let request_timeout = match &raw.upload.request_timeout {
        None => default.request_timeout,
        Some(s) => match parse_duration(s) {
            Ok(d) if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) => d,
            Ok(_) => {
                p.push(
                    format!("{at}.upload.request_timeout"),
                    "must be between 1s and 1h",
                );
                return None;
            }
            Err(m) => {
                p.push(format!("{at}.upload.request_timeout"), m);
                return None;
            }
        },
    };
    Some(UploadSettings {
        multipart_threshold: threshold,
        part_size,
        request_timeout,
    })
}

/// Parses `s3://bucket/prefix`, `file:///abs/dir` or `file://./rel/dir`.
pub fn parse_url(url: &str) -> Result<Location, String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
            });
        if !valid_bucket {
            return Err(format!(
                "{bucket:?} is not a bucket name (3-63 lowercase letters, digits, '.', '-')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|s| (s.is_empty() && !prefix.is_empty()) || s == "." || s == "..")
        {
            return Err(format!(
                "prefix {prefix:?} has an empty, '.' or '..' segment"
            ));
        }
        return Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        });
    }
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err("file:// needs a directory, e.g. file://./out".to_string());
        }
        return Ok(Location::Local {
            root: PathBuf::from(path),
        });
    }
    Err(format!(
        "{url:?} is not a destination URL (use s3://bucket/prefix or file:///dir)"
    ))
}
