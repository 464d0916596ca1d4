//! How a destination reaches its store: the provider preset (AWS, R2, GCS, MinIO, any other
//! S3-compatible store) with its endpoint, region and path-style defaults, and the options sent
//! with every object (server-side encryption, canned ACL, storage class).

use serde::Serialize;

use super::raw::RawDestination;
use super::settings::{EnvLookup, Problems};

/// Which store a destination writes to; chooses sane defaults for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Amazon S3: the SDK resolves the endpoint from the region.
    Aws,
    /// Cloudflare R2: `https://ACCOUNT_ID.r2.cloudflarestorage.com`, region `auto`.
    R2,
    /// Google Cloud Storage's XML API with HMAC keys: `https://storage.googleapis.com`.
    Gcs,
    /// MinIO: an endpoint, path-style addressing.
    Minio,
    /// Any other S3-compatible store (Wasabi, B2, Ceph, SeaweedFS…): an endpoint.
    Generic,
}

impl Provider {
    /// Whether the store is Amazon S3 itself, which takes the SDK's default request checksums;
    /// every other store gets checksums only where the API requires them, since the SDK's
    /// defaults break R2, Ceph and older MinIO.
    pub fn is_aws(self) -> bool {
        self == Self::Aws
    }

    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::R2 => "r2",
            Self::Gcs => "gcs",
            Self::Minio => "minio",
            Self::Generic => "generic",
        }
    }
}

/// Server-side encryption requested on every object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "sse")]
pub enum Sse {
    /// `AES256`: keys managed by the store.
    #[serde(rename = "AES256")]
    Aes256,
    /// `aws:kms`, with a key id (the account's AWS-managed key when `None`).
    #[serde(rename = "aws:kms")]
    Kms { sse_kms_key_id: Option<String> },
}

/// Options sent with every object. `None` sends no header: the bucket's defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriteOptions {
    pub sse: Option<Sse>,
    /// A canned ACL, e.g. `bucket-owner-full-control` for cross-account buckets.
    pub acl: Option<String>,
    pub storage_class: Option<String>,
}

/// Endpoint, region and addressing after the provider's defaults are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub provider: Provider,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
}

/// S3's canned ACLs for objects.
const CANNED_ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];

pub(super) fn connection(
    raw: &RawDestination,
    at: &str,
    env: EnvLookup<'_>,
    p: &mut Problems,
) -> Option<Connection> {
    let provider = match raw.provider.as_deref() {
        // An endpoint without a provider is some S3-compatible store.
        None if raw.endpoint.is_some() => Provider::Generic,
        None | Some("aws") => Provider::Aws,
        Some("r2") => Provider::R2,
        Some("gcs") => Provider::Gcs,
        Some("minio") => Provider::Minio,
        Some("generic") => Provider::Generic,
        Some(other) => {
            p.push(
                format!("{at}.provider"),
                format!(
                    "{other:?} is not a provider (use \"aws\", \"r2\", \"gcs\", \"minio\" or \"generic\")"
                ),
            );
            return None;
        }
    };
    if let Some(endpoint) = &raw.endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        p.push(
            format!("{at}.endpoint"),
            format!("{endpoint:?} must start with http:// or https://"),
        );
        return None;
    }
    if raw.account_id.is_some() && provider != Provider::R2 {
        p.push(
            format!("{at}.account_id"),
            "only used with provider = \"r2\"",
        );
    }
    let endpoint = match provider {
        Provider::Aws => raw.endpoint.clone(),
        Provider::R2 => match (&raw.endpoint, &raw.account_id) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(id)) if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Some(format!("https://{id}.r2.cloudflarestorage.com"))
            }
            (None, Some(_)) => {
                p.push(
                    format!("{at}.account_id"),
                    "the Cloudflare account id: letters and digits only",
                );
                return None;
            }
            (None, None) => {
                p.push(
                    format!("{at}.account_id"),
                    "provider = \"r2\" needs account_id (or an endpoint)",
                );
                return None;
            }
        },
        Provider::Gcs => Some(
            raw.endpoint
                .clone()
                .unwrap_or_else(|| "https://storage.googleapis.com".into()),
        ),
        Provider::Minio | Provider::Generic => match &raw.endpoint {
            Some(e) => Some(e.clone()),
            None => {
                p.push(
                    format!("{at}.endpoint"),
                    format!(
                        "provider = {:?} needs the store's endpoint, e.g. \"https://s3.example.com\"",
                        provider.as_str()
                    ),
                );
                return None;
            }
        },
    };
    // The config's own region first. On AWS, then, AWS_REGION and AWS_DEFAULT_REGION as every
    // AWS tool reads them, and the S3_REGION convention. A MinIO or generic store's region is
    // its own: S3_REGION comes before the AWS names there, since EKS, ECS and Lambda set
    // AWS_REGION for the cluster whatever store a worker writes to. R2 and GCS sign for "auto".
    let names: &[&str] = match provider {
        Provider::Aws => &["AWS_REGION", "AWS_DEFAULT_REGION", "S3_REGION"],
        Provider::Minio | Provider::Generic => &["S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"],
        Provider::R2 | Provider::Gcs => &[],
    };
    let region = raw.region.clone().unwrap_or_else(|| match provider {
        Provider::R2 | Provider::Gcs => "auto".to_string(),
        _ => names
            .iter()
            .find_map(|name| env(name).filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "us-east-1".to_string()),
    });
    let path_style = raw.path_style.unwrap_or(!provider.is_aws());
    Some(Connection {
        provider,
        endpoint,
        region,
        path_style,
    })
}

pub(super) fn write_options(raw: &RawDestination, at: &str, p: &mut Problems) -> WriteOptions {
    let sse = match raw.sse.as_deref() {
        None => None,
        Some("AES256") => Some(Sse::Aes256),
        Some("aws:kms") => Some(Sse::Kms {
            sse_kms_key_id: raw.sse_kms_key_id.clone().filter(|k| !k.is_empty()),
        }),
        Some(other) => {
            p.push(
                format!("{at}.sse"),
                format!("{other:?} is not supported (use \"AES256\" or \"aws:kms\")"),
            );
            None
        }
    };
    if raw.sse_kms_key_id.is_some() && raw.sse.as_deref() != Some("aws:kms") {
        p.push(
            format!("{at}.sse_kms_key_id"),
            "only used with sse = \"aws:kms\"",
        );
    }
    if let Some(acl) = &raw.acl
        && !CANNED_ACLS.contains(&acl.as_str())
    {
        p.push(
            format!("{at}.acl"),
            format!(
                "{acl:?} is not a canned ACL (e.g. \"bucket-owner-full-control\"; one of {})",
                CANNED_ACLS.join(", ")
            ),
        );
    }
    if let Some(class) = &raw.storage_class
        && (class.is_empty()
            || !class
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
    {
        p.push(
            format!("{at}.storage_class"),
            format!(
                "{class:?} is not a storage class (e.g. \"STANDARD\", \"STANDARD_IA\", \"INTELLIGENT_TIERING\")"
            ),
        );
    }
    WriteOptions {
        sse,
        acl: raw.acl.clone(),
        storage_class: raw.storage_class.clone(),
    }
}

/// The keys that mean something only for an S3 destination.
pub(super) fn s3_only_keys(raw: &RawDestination) -> [(&'static str, bool); 9] {
    [
        ("provider", raw.provider.is_some()),
        ("account_id", raw.account_id.is_some()),
        ("endpoint", raw.endpoint.is_some()),
        ("region", raw.region.is_some()),
        ("path_style", raw.path_style.is_some()),
        ("sse", raw.sse.is_some()),
        ("sse_kms_key_id", raw.sse_kms_key_id.is_some()),
        ("acl", raw.acl.is_some()),
        ("storage_class", raw.storage_class.is_some()),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{ConfigError, DestinationSettings, Location, parse};

    fn dest(keys: &str, env: &[(&str, &str)]) -> Result<DestinationSettings, ConfigError> {
        let text = format!(
            "[source]\nkind = \"file\"\npath = \"in.ndjson\"\n[[destinations]]\nname = \"d\"\ntimestamp = \"field:ts\"\n{keys}\n\
             [destinations.auth]\naccess_key_id = \"AKID\"\nsecret_access_key = \"s3cr3t\"\n"
        );
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        parse(Path::new("t.toml"), &text, &lookup).map(|mut s| s.destinations.remove(0))
    }

    fn problems(keys: &str) -> String {
        dest(keys, &[]).unwrap_err().to_string()
    }

    #[test]
    fn each_provider_gets_its_endpoint_region_and_addressing() {
        let aws = dest("url = \"s3://bkt\"", &[]).unwrap();
        assert_eq!(
            (
                aws.provider,
                aws.endpoint,
                aws.region.as_str(),
                aws.path_style
            ),
            (Provider::Aws, None, "us-east-1", false)
        );
        let r2 = dest(
            "url = \"s3://bkt\"\nprovider = \"r2\"\naccount_id = \"abc123\"",
            &[],
        )
        .unwrap();
        assert_eq!(
            r2.endpoint.as_deref(),
            Some("https://abc123.r2.cloudflarestorage.com")
        );
        assert_eq!((r2.region.as_str(), r2.path_style), ("auto", true));
        let gcs = dest("url = \"s3://bkt\"\nprovider = \"gcs\"", &[]).unwrap();
        assert_eq!(
            gcs.endpoint.as_deref(),
            Some("https://storage.googleapis.com")
        );
        assert_eq!((gcs.region.as_str(), gcs.path_style), ("auto", true));
        let minio = dest(
            "url = \"s3://bkt\"\nprovider = \"minio\"\nendpoint = \"http://minio:9000\"",
            &[],
        )
        .unwrap();
        assert!(minio.path_style && !minio.provider.is_aws());
        // An endpoint alone means some S3-compatible store; its path style can be turned off.
        let other = dest(
            "url = \"s3://bkt\"\nendpoint = \"https://s3.wasabisys.com\"\npath_style = false",
            &[],
        )
        .unwrap();
        assert_eq!(
            (other.provider, other.path_style),
            (Provider::Generic, false)
        );
    }

    #[test]
    fn a_provider_without_what_it_needs_is_named() {
        let e = problems("url = \"s3://bkt\"\nprovider = \"r2\"");
        assert!(
            e.contains("`destinations[0].account_id`: provider = \"r2\" needs account_id"),
            "{e}"
        );
        let e = problems("url = \"s3://bkt\"\nprovider = \"minio\"");
        assert!(e.contains("`destinations[0].endpoint`"), "{e}");
        let e = problems("url = \"s3://bkt\"\nprovider = \"azure\"");
        assert!(e.contains("\"azure\" is not a provider"), "{e}");
        let e = problems("url = \"s3://bkt\"\naccount_id = \"abc\"");
        assert!(e.contains("only used with provider = \"r2\""), "{e}");
        let e = problems("url = \"s3://bkt\"\nprovider = \"r2\"\naccount_id = \"a/../b\"");
        assert!(e.contains("letters and digits"), "{e}");
    }

    #[test]
    fn write_options_are_checked_and_nothing_set_sends_nothing() {
        let plain = dest("url = \"s3://bkt\"", &[]).unwrap();
        assert_eq!(plain.write, WriteOptions::default());
        let kms = dest(
            "url = \"s3://bkt\"\nsse = \"aws:kms\"\nsse_kms_key_id = \"arn:aws:kms:eu-west-1:1:key/k\"\n\
             acl = \"bucket-owner-full-control\"\nstorage_class = \"STANDARD_IA\"",
            &[],
        )
        .unwrap();
        assert_eq!(
            kms.write,
            WriteOptions {
                sse: Some(Sse::Kms {
                    sse_kms_key_id: Some("arn:aws:kms:eu-west-1:1:key/k".into())
                }),
                acl: Some("bucket-owner-full-control".into()),
                storage_class: Some("STANDARD_IA".into()),
            }
        );
        let e = problems("url = \"s3://bkt\"\nsse = \"aes256\"");
        assert!(e.contains("`destinations[0].sse`"), "{e}");
        let e = problems("url = \"s3://bkt\"\nsse = \"AES256\"\nsse_kms_key_id = \"k\"");
        assert!(e.contains("only used with sse = \"aws:kms\""), "{e}");
        let e = problems("url = \"s3://bkt\"\nacl = \"owner-only\"");
        assert!(e.contains("not a canned ACL"), "{e}");
        let e = problems("url = \"s3://bkt\"\nstorage_class = \"cold storage\"");
        assert!(e.contains("not a storage class"), "{e}");
        let e = problems("url = \"file:///tmp/x\"\nsse = \"AES256\"");
        assert!(
            e.contains("`destinations[0].sse`: only used with s3:// destinations"),
            "{e}"
        );
    }

    #[test]
    fn conventional_environment_names_fill_in_bucket_and_region() {
        let d = dest(
            "",
            &[
                ("S3_BUCKET_NAME", "from-env"),
                ("S3_REGION", "eu-central-1"),
            ],
        )
        .unwrap();
        assert_eq!(
            d.location,
            Location::S3 {
                bucket: "from-env".into(),
                prefix: String::new()
            }
        );
        assert_eq!(d.region, "eu-central-1");
        // The file wins over the environment.
        let d = dest(
            "url = \"s3://in-file/p\"\nregion = \"us-west-2\"",
            &[
                ("S3_BUCKET_NAME", "from-env"),
                ("S3_REGION", "eu-central-1"),
            ],
        )
        .unwrap();
        assert_eq!(d.location.to_string(), "s3://in-file/p");
        assert_eq!(d.region, "us-west-2");
    }

    #[test]
    fn region_comes_from_the_file_then_aws_region_aws_default_region_s3_region_and_s3_region_first_off_aws()
     {
        let all = [
            ("AWS_REGION", "ap-south-1"),
            ("AWS_DEFAULT_REGION", "sa-east-1"),
            ("S3_REGION", "eu-central-1"),
        ];
        let region = |text: &str, vars: &[(&str, &str)]| dest(text, vars).unwrap().region;
        assert_eq!(
            region("url = \"s3://bkt\"\nregion = \"us-west-2\"", &all),
            "us-west-2"
        );
        assert_eq!(region("url = \"s3://bkt\"", &all), "ap-south-1");
        assert_eq!(region("url = \"s3://bkt\"", &all[1..]), "sa-east-1");
        assert_eq!(region("url = \"s3://bkt\"", &all[2..]), "eu-central-1");
        assert_eq!(
            region("url = \"s3://bkt\"", &[("AWS_REGION", "")]),
            "us-east-1"
        );
        assert_eq!(region("url = \"s3://bkt\"", &[]), "us-east-1");
        // R2 signs for "auto" whatever the environment says.
        let r2 = "url = \"s3://bkt\"\nprovider = \"r2\"\naccount_id = \"acct\"";
        assert_eq!(region(r2, &all), "auto");
        // A generic store's own S3_REGION wins over the region an AWS platform sets.
        let wasabi = "url = \"s3://bkt\"\nendpoint = \"https://s3.eu-central-2.wasabisys.com\"";
        assert_eq!(region(wasabi, &all), "eu-central-1");
        assert_eq!(region(wasabi, &all[..2]), "ap-south-1");
    }
}
