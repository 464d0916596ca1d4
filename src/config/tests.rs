//! Loading whole config files: the public key names, errors that name the key, redaction.

use super::*;
use std::time::Duration;

const FULL: &str = r#"
[source]
kind = "kafka"
brokers = "127.0.0.1:9092"
group_id = "pail"
topics = ["events"]
[source.properties]
"sasl.password" = "${KAFKA_PASSWORD}"
"session.timeout.ms" = 6000

[[destinations]]
name = "acme"
topics = ["events"]
url = "s3://bucket/prefix"
region = "us-east-1"
endpoint = "http://127.0.0.1:8333"
path_style = true
key_template = "{topic}/dt={ts:%Y-%m-%d}/hour={ts:%H}"
timestamp = "kafka"
on_bad_record = "dead_letter"
[destinations.auth]
method = "static"
access_key_id = "${S3_ACCESS_KEY_ID}"
secret_access_key = "${S3_SECRET_ACCESS_KEY}"
[destinations.rotation]
max_records = 1000000
max_bytes = "128MiB"
max_age = "5m"
[destinations.parquet]
compression = "zstd"
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "KAFKA_PASSWORD" => Some("kafka-pass-123".into()),
        "S3_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
        "S3_SECRET_ACCESS_KEY" => Some("very-secret-456".into()),
        _ => None,
    }
}

fn parse_str(text: &str) -> Result<Settings, ConfigError> {
    parse(Path::new("test.toml"), text, &env)
}

#[test]
fn the_documented_example_loads() {
    let s = parse_str(FULL).unwrap();
    let d = &s.destinations[0];
    assert_eq!(
        d.location,
        Location::S3 {
            bucket: "bucket".into(),
            prefix: "prefix".into()
        }
    );
    assert_eq!(d.rotation.max_bytes, Some(128 << 20));
    assert!(d.path_style);
    match &s.source {
        SourceSettings::Kafka(k) => {
            assert_eq!(k.topics, ["events"]);
            assert_eq!(k.properties.0["session.timeout.ms"], "6000");
            assert_eq!(k.properties.0["sasl.password"], "kafka-pass-123");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&d.auth, AuthSettings::Static(k) if k.secret_access_key.expose() == "very-secret-456")
    );
}

#[test]
fn secrets_never_print() {
    let s = parse_str(FULL).unwrap();
    let debug = format!("{s:?}");
    let json = serde_json::to_string(&s).unwrap();
    for out in [debug, json] {
        assert!(!out.contains("very-secret-456"), "{out}");
        assert!(!out.contains("kafka-pass-123"), "{out}");
        assert!(out.contains("AKIDEXAMPLE"));
    }
}

#[test]
fn unknown_key_is_named_with_its_path() {
    let text = FULL.replace("path_style = true", "path_style = true\nbukket = \"x\"");
    let err = parse_str(&text).unwrap_err().to_string();
    assert!(err.contains("test.toml"), "{err}");
    assert!(err.contains("destinations[0]"), "{err}");
    assert!(err.contains("unknown field `bukket`"), "{err}");
}

#[test]
fn missing_required_key_is_named() {
    let text = FULL.replace("url = \"s3://bucket/prefix\"\n", "");
    let err = parse_str(&text).unwrap_err().to_string();
    assert!(err.contains("`destinations[0].url`: required"), "{err}");
    assert!(err.contains("S3_BUCKET_NAME"), "{err}");
    // Only the missing key is reported, not keys whose meaning depends on it.
    assert!(!err.contains("endpoint"), "{err}");
    let missing = FULL.replace("name = \"acme\"\n", "");
    let err = parse_str(&missing).unwrap_err().to_string();
    assert!(err.contains("missing field `name`"), "{err}");
    assert!(err.contains("destinations[0]"), "{err}");
}

#[test]
fn unset_variable_names_key_and_variable() {
    let text = FULL.replace("${S3_SECRET_ACCESS_KEY}", "${NOT_SET_ANYWHERE}");
    let err = parse_str(&text).unwrap_err().to_string();
    assert!(
        err.contains("destinations[0].auth.secret_access_key"),
        "{err}"
    );
    assert!(err.contains("NOT_SET_ANYWHERE"), "{err}");
}

#[test]
fn invalid_values_are_all_reported_with_keys() {
    let text = FULL
        .replace("\"zstd\"", "\"lz5\"")
        .replace("max_age = \"5m\"", "max_age = \"soon\"")
        .replace("{ts:%H}", "{nope}");
    let err = parse_str(&text).unwrap_err().to_string();
    assert!(err.contains("destinations[0].parquet.compression"), "{err}");
    assert!(err.contains("destinations[0].rotation.max_age"), "{err}");
    assert!(err.contains("destinations[0].key_template"), "{err}");
}

#[test]
fn a_topic_goes_to_exactly_one_destination() {
    let mut text = FULL.to_string();
    text.push_str("\n[[destinations]]\nname = \"other\"\ntopics = [\"events\"]\nurl = \"file:///tmp/x\"\ntimestamp = \"kafka\"\n");
    let err = parse_str(&text).unwrap_err().to_string();
    assert!(err.contains("goes to both"), "{err}");
}

#[test]
fn file_source_needs_an_event_time_field() {
    let text = "[source]\nkind = \"file\"\npath = \"x.ndjson\"\n[[destinations]]\nname = \"l\"\nurl = \"file://./out\"\n";
    let err = parse_str(text).unwrap_err().to_string();
    assert!(err.contains("field:NAME"), "{err}");
    let ok = format!("{text}timestamp = \"field:ts\"\n");
    let s = parse_str(&ok).unwrap();
    assert_eq!(s.route(FILE_TOPIC), Some(0));
}

#[test]
fn a_local_path_segment_longer_than_a_file_name_can_be_is_refused() {
    let file = |url: &str, template: &str| {
        format!(
            "[source]\nkind = \"file\"\npath = \"x.ndjson\"\n[[destinations]]\nname = \"l\"\n\
             url = \"{url}\"\ntimestamp = \"field:ts\"\nkey_template = \"{template}\"\n"
        )
    };
    // Two field values of up to 128 bytes each in one segment: up to 259 bytes.
    let long = "c={field:a}-{field:b}/x";
    let err = parse_str(&file("file://./out", long))
        .unwrap_err()
        .to_string();
    assert!(err.contains("key_template"), "{err}");
    assert!(err.contains("259"), "{err}");
    parse_str(&file("file://./out", "c={field:a}/{field:b}")).unwrap();
    // S3 keys have no segment limit.
    parse_str(&file("s3://bucket", long)).unwrap();
}

#[test]
fn static_keys_fall_back_to_conventional_env_names() {
    let text = FULL.replace(
        "access_key_id = \"${S3_ACCESS_KEY_ID}\"\nsecret_access_key = \"${S3_SECRET_ACCESS_KEY}\"\n",
        "",
    );
    let s = parse_str(&text).unwrap();
    assert!(
        matches!(&s.destinations[0].auth, AuthSettings::Static(k) if k.access_key_id == "AKIDEXAMPLE")
    );
}

#[test]
fn upload_sizes_and_the_telemetry_address_are_checked() {
    let ok = parse_str(&format!(
        "{FULL}[destinations.upload]\nmultipart_threshold = \"64MiB\"\npart_size = \"8MiB\"\n\
         [telemetry]\nlisten = \"127.0.0.1:9464\"\n"
    ))
    .unwrap();
    assert_eq!(ok.destinations[0].upload.multipart_threshold, 64 << 20);
    assert_eq!(ok.destinations[0].upload.part_size, 8 << 20);
    assert_eq!(ok.telemetry.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(parse_str(FULL).unwrap().telemetry.listen, None);

    for (upload, key) in [
        ("part_size = \"1MiB\"", "upload.part_size"),
        ("part_size = \"6GiB\"", "upload.part_size"),
        (
            "multipart_threshold = \"8MiB\"\npart_size = \"16MiB\"",
            "upload.multipart_threshold",
        ),
        (
            "multipart_threshold = \"lots\"",
            "upload.multipart_threshold",
        ),
    ] {
        let text = format!("{FULL}[destinations.upload]\n{upload}\n");
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(
            err.contains(&format!("destinations[0].{key}")),
            "{upload}: {err}"
        );
    }
    let err = parse_str(&format!("{FULL}[telemetry]\nlisten = \"everywhere\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("telemetry.listen"), "{err}");
}

fn with_auth(auth: &str) -> String {
    let start = FULL.find("[destinations.auth]").unwrap();
    let end = FULL.find("[destinations.rotation]").unwrap();
    format!(
        "{}[destinations.auth]\n{auth}\n{}",
        &FULL[..start],
        &FULL[end..]
    )
}

#[test]
fn web_identity_takes_exactly_one_token_source_and_defaults_its_session() {
    let s = parse_str(&with_auth(
        "method = \"web_identity\"\nrole_arn = \"arn:aws:iam::123456789012:role/pail\"\ntoken_file = \"/var/run/token\"",
    ))
    .unwrap();
    let AuthSettings::WebIdentity(w) = &s.destinations[0].auth else {
        panic!("{:?}", s.destinations[0].auth)
    };
    assert_eq!(w.role.session_name, "pail-acme");
    assert_eq!(w.role.duration, Duration::from_secs(3600));
    assert!(matches!(&w.token, TokenSource::File(p) if p.to_str() == Some("/var/run/token")));

    let gcp = parse_str(&with_auth(
        "method = \"web_identity\"\nrole_arn = \"arn:aws:iam::1:role/r\"\ntoken_gcp_audience = \"https://pail.example\"\nduration = \"15m\"\nsts_region = \"eu-west-1\"",
    ))
    .unwrap();
    let AuthSettings::WebIdentity(w) = &gcp.destinations[0].auth else {
        panic!()
    };
    assert!(matches!(&w.token, TokenSource::Gcp { host, .. } if host == GCP_METADATA_HOST));
    assert_eq!(w.role.sts_region.as_deref(), Some("eu-west-1"));

    for (auth, key) in [
        (
            "method = \"web_identity\"\nrole_arn = \"arn:aws:iam::1:role/r\"",
            "destinations[0].auth",
        ),
        (
            "method = \"web_identity\"\nrole_arn = \"arn:aws:iam::1:role/r\"\ntoken_file = \"t\"\ntoken_command = [\"x\"]",
            "destinations[0].auth",
        ),
        (
            "method = \"web_identity\"\ntoken_file = \"t\"",
            "destinations[0].auth.role_arn",
        ),
        (
            "method = \"web_identity\"\nrole_arn = \"pail-role\"\ntoken_file = \"t\"",
            "destinations[0].auth.role_arn",
        ),
        (
            "method = \"web_identity\"\nrole_arn = \"arn:aws:iam::1:role/r\"\ntoken_file = \"t\"\nduration = \"13h\"",
            "destinations[0].auth.duration",
        ),
        (
            "method = \"web_identity\"\nrole_arn = \"arn:aws:iam::1:role/r\"\ntoken_command = []",
            "destinations[0].auth.token_command",
        ),
        (
            "method = \"static\"\naccess_key_id = \"a\"\nsecret_access_key = \"b\"\nrole_arn = \"arn:x\"",
            "destinations[0].auth.role_arn",
        ),
    ] {
        let err = parse_str(&with_auth(auth)).unwrap_err().to_string();
        assert!(
            err.contains(&format!("key `{key}`")) || err.contains(key),
            "{auth}: {err}"
        );
    }
}

#[test]
fn assume_role_uses_static_keys_when_given_and_never_prints_them() {
    let s = parse_str(&with_auth(
        "method = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/pail\"\nexternal_id = \"ext-42\"\n\
         access_key_id = \"AKIDSOURCE\"\nsecret_access_key = \"source-secret-789\"",
    ))
    .unwrap();
    let AuthSettings::AssumeRole(a) = &s.destinations[0].auth else {
        panic!()
    };
    assert_eq!(a.external_id.as_deref(), Some("ext-42"));
    assert_eq!(a.source.as_ref().unwrap().access_key_id, "AKIDSOURCE");
    let shown = format!("{s:?}{}", toml::to_string_pretty(&s).unwrap());
    assert!(!shown.contains("source-secret-789"), "{shown}");

    let chain = parse_str(&with_auth(
        "method = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/pail\"",
    ))
    .unwrap();
    assert!(
        matches!(&chain.destinations[0].auth, AuthSettings::AssumeRole(a) if a.source.is_none())
    );
}

#[test]
fn schema_modes_and_limits_load_and_their_mistakes_are_named() {
    let declared = format!(
        "{FULL}[destinations.schema]\nmode = \"declared\"\nunknown_fields = \"ignore\"\n\
         json_columns = [\"payload\"]\nmetadata_columns = [\"_kafka_offset\", \"_kafka_key\"]\n\
         columns = [{{ name = \"id\", type = \"int64\", nullable = false }}, \
         {{ name = \"price\", type = \"decimal(12,2)\" }}, {{ name = \"payload\", type = \"string\" }}]\n\
         [destinations.limits]\nmax_record_size = \"1MiB\"\nmax_depth = 8\nmax_columns = 50\n"
    );
    let s = parse_str(&declared).unwrap();
    let d = &s.destinations[0];
    assert_eq!(
        (
            d.schema.max_record_bytes,
            d.schema.max_depth,
            d.schema.max_columns
        ),
        (1 << 20, 8, 50)
    );
    assert!(d.parquet.metadata.offset && d.parquet.metadata.key && !d.parquet.metadata.topic);
    match &d.schema.mode {
        crate::schema::SchemaMode::Declared(decl) => {
            assert_eq!(decl.columns.len(), 3);
            assert!(!decl.columns[0].nullable);
            assert_eq!(decl.columns[2].ty, crate::schema::Ty::Json);
            assert_eq!(decl.unknown_fields, crate::schema::UnknownFields::Ignore);
        }
        other => panic!("{other:?}"),
    }
    // check-config shows the schema.
    let shown = serde_json::to_string(&s).unwrap();
    assert!(shown.contains("\"decimal(12,2)\""), "{shown}");

    for (extra, key, says) in [
        ("mode = \"guess\"\n", "schema.mode", "not a schema mode"),
        ("mode = \"declared\"\n", "schema.columns", "needs columns"),
        (
            "mode = \"declared\"\ncolumns = [{ name = \"a\", type = \"uuid\" }]\n",
            "schema.columns[0].type",
            "unknown type",
        ),
        (
            "mode = \"declared\"\nschema_file = \"/no/such/schema.json\"\n",
            "schema.schema_file",
            "cannot read /no/such/schema.json",
        ),
        (
            "columns = [{ name = \"a\", type = \"int64\" }]\n",
            "schema.columns",
            "only used with mode = \"declared\"",
        ),
        (
            "metadata_columns = [\"_kafka_nope\"]\n",
            "schema.metadata_columns",
            "not a metadata column",
        ),
    ] {
        let text = format!("{FULL}[destinations.schema]\n{extra}");
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("destinations[0].{key}")), "{err}");
        assert!(err.contains(says), "{err}");
    }
    let text = format!("{FULL}[destinations.limits]\nmax_depth = 500\n");
    let err = parse_str(&text).unwrap_err().to_string();
    assert!(err.contains("destinations[0].limits.max_depth"), "{err}");
}

#[test]
fn kafka_properties_print_only_what_is_known_to_be_harmless() {
    let text = FULL.replace(
        "\"session.timeout.ms\" = 6000",
        "\"session.timeout.ms\" = 6000\n\"ssl.key.pem\" = \"-----BEGIN PRIVATE KEY-----abc\"\n\
         \"sasl.oauthbearer.client.secret\" = \"oauth-789\"\n\"some.future.credential\" = \"future-000\"",
    );
    let s = parse_str(&text).unwrap();
    let debug = format!("{s:?}");
    for secret in [
        "BEGIN PRIVATE KEY",
        "oauth-789",
        "future-000",
        "kafka-pass-123",
    ] {
        assert!(!debug.contains(secret), "{secret} printed: {debug}");
    }
    assert!(debug.contains("6000"), "harmless values still print");
}

#[test]
fn a_toml_syntax_error_names_the_line_without_echoing_it() {
    let text = "[source]\nkind = \"kafka\"\n\"sasl.password\" = \"hunter2-secret\n";
    let err = parse_str(text).unwrap_err().to_string();
    assert!(err.contains("line 3"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn worker_durations_that_would_spin_or_overflow_are_refused() {
    for (key, value) in [
        ("permanent_error_retry", "0s"),
        ("shutdown_timeout", "99999999999d"),
        ("startup_timeout", "30d"),
    ] {
        let text = format!("{FULL}\n[worker]\n{key} = \"{value}\"\n");
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("worker.{key}")), "{key}: {err}");
    }
}

const LOCAL: &str = "[source]\nkind = \"file\"\npath = \"in.ndjson\"\n[[destinations]]\nname = \"l\"\nurl = \"file://./out\"\nkey_template = \"{topic}\"\ntimestamp = \"field:ts\"\n";

#[test]
fn the_memory_limit_is_divided_into_shares_that_fit_in_it() {
    let settings = parse_str(LOCAL).unwrap();
    assert_eq!(settings.worker.memory_limit, 256 << 20);
    let shares = settings.worker.memory();
    assert_eq!(shares, MemoryShares::of(256 << 20));
    assert_eq!(shares.pipeline, 96 << 20);
    assert!(shares.pipeline + shares.fetch_queues + shares.read_ahead < 256 << 20);

    let settings = parse_str(&format!("{LOCAL}[worker]\nmemory_limit = \"1GiB\"\n")).unwrap();
    assert_eq!(settings.worker.memory().fetch_queues, 256 << 20);
}

#[test]
fn max_buffer_bytes_replaces_only_the_segments_share() {
    let text = format!("{LOCAL}[worker]\nmemory_limit = \"64MiB\"\nmax_buffer_bytes = \"8MiB\"\n");
    let shares = parse_str(&text).unwrap().worker.memory();
    assert_eq!(shares.pipeline, 8 << 20);
    assert_eq!(shares.fetch_queues, 16 << 20);
}

#[test]
fn a_memory_limit_below_the_minimum_is_refused_with_its_key() {
    let err = parse_str(&format!("{LOCAL}[worker]\nmemory_limit = \"1MiB\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("worker.memory_limit"), "{err}");
}

#[test]
fn objects_are_sized_in_parquet_bytes_not_buffered_json() {
    let text = FULL.replace("max_bytes = \"128MiB\"\n", "");
    let d = parse_str(&text).unwrap().destinations.remove(0);
    assert_eq!(d.rotation.target_file_size, 128 << 20);
    assert_eq!(d.rotation.max_bytes, None, "no JSON limit unless set");
    assert_eq!(d.parquet.row_group_bytes, 8 << 20);

    let text = FULL.replace(
        "compression = \"zstd\"\n",
        "compression = \"zstd\"\nrow_group_bytes = \"4KiB\"\n",
    );
    let err = parse_str(&text).unwrap_err().to_string();
    assert!(err.contains("parquet.row_group_bytes"), "{err}");
    let text = FULL.replace(
        "max_age = \"5m\"\n",
        "max_age = \"5m\"\ntarget_file_size = \"0\"\n",
    );
    let err = parse_str(&text).unwrap_err().to_string();
    assert!(err.contains("rotation.target_file_size"), "{err}");
}

#[test]
fn timezone_takes_iana_names_and_names_the_key_when_unknown() {
    let with = |zone: &str| format!("{LOCAL}timezone = \"{zone}\"\n");
    let settings = parse_str(&with("Europe/Berlin")).unwrap();
    assert_eq!(settings.destinations[0].timezone, chrono_tz::Europe::Berlin);
    assert_eq!(
        settings.destinations[0].key_template.zone(),
        chrono_tz::Europe::Berlin
    );
    let err = parse_str(&with("Mars/Olympus_Mons"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("destinations[0].timezone") && err.contains("Mars/Olympus_Mons"),
        "{err}"
    );
    let settings = parse_str(LOCAL).unwrap();
    assert_eq!(settings.destinations[0].timezone, chrono_tz::UTC);
}

#[test]
fn numbers_and_booleans_can_come_from_the_environment() {
    let text = format!(
        "{LOCAL}preflight = \"${{PREFLIGHT}}\"\n[destinations.rotation]\nmax_records = \"${{MAX}}\"\n\
         [worker]\nmemory_limit = \"${{BUDGET}}\"\nmax_concurrent_uploads = \"${{UPLOADS:-3}}\"\n\
         [telemetry]\nlisten = \":9464\"\n"
    );
    let env = |name: &str| match name {
        "PREFLIGHT" => Some("false".to_string()),
        "MAX" => Some("5000".to_string()),
        "BUDGET" => Some("512Mi".to_string()),
        _ => None,
    };
    let settings = parse(Path::new("test.toml"), &text, &env).unwrap();
    let d = &settings.destinations[0];
    assert!(!d.preflight);
    assert_eq!(d.rotation.max_records, 5000);
    assert_eq!(settings.worker.memory_limit, 512 << 20);
    assert_eq!(settings.worker.max_concurrent_uploads, 3);
    assert_eq!(
        settings.telemetry.listen,
        Some("0.0.0.0:9464".parse().unwrap())
    );
    // A value that is not a number names its key.
    let env = |name: &str| (name == "MAX").then(|| "lots".to_string());
    let text = format!("{LOCAL}[destinations.rotation]\nmax_records = \"${{MAX}}\"\n");
    let err = parse(Path::new("test.toml"), &text, &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_records") && err.contains("\"lots\" is not a non-negative integer"),
        "{err}"
    );
    let err = parse_str(&format!("{LOCAL}preflight = \"yes\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("preflight") && err.contains("true or false"),
        "{err}"
    );
}

#[test]
fn without_keys_an_aws_destination_uses_the_default_chain_and_another_store_is_an_error() {
    let none = |_: &str| None;
    let base = "[source]\nkind = \"file\"\npath = \"in.ndjson\"\n[[destinations]]\nname = \"d\"\n\
        url = \"s3://bucket/p\"\ntimestamp = \"field:ts\"\n";
    let parse_env =
        |text: &str, env: &dyn Fn(&str) -> Option<String>| parse(Path::new("test.toml"), text, env);
    // AWS, no table, no keys: the SDK's chain.
    let s = parse_env(base, &none).unwrap();
    assert!(matches!(s.destinations[0].auth, AuthSettings::Default));
    // Keys in the environment: static, as before.
    let s = parse_env(base, &env).unwrap();
    assert!(matches!(s.destinations[0].auth, AuthSettings::Static(_)));
    // Another store with forgotten keys: an error, not an AWS identity sent elsewhere.
    let minio = format!("{base}endpoint = \"http://127.0.0.1:9000\"\n");
    let err = parse_env(&minio, &none).unwrap_err().to_string();
    assert!(err.contains("static keys need access_key_id"), "{err}");
    // A role or token without a method: which one is asked for.
    let role = format!("{base}[destinations.auth]\ntoken_file = \"/t\"\n");
    let err = parse_env(&role, &none).unwrap_err().to_string();
    assert!(err.contains("destinations[0].auth.method"), "{err}");
}
