//! Inference, widening, admission and the shape walk, against the decoded objects they
//! describe; property tests over generated records.

use super::*;
use serde_json::json;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[test]
fn strict_mode_refuses_conflicts_but_widens_numbers() {
    let settings = SchemaSettings {
        mode: SchemaMode::Infer {
            strict: true,
            rules: InferRules::default(),
        },
        ..SchemaSettings::default()
    };
    let mut seg = Fields::default();
    assert!(settings.admit(&mut seg, &obj(json!({"v": 1}))).is_ok());
    assert!(settings.admit(&mut seg, &obj(json!({"v": 1.5}))).is_ok());
    let err = settings
        .admit(&mut seg, &obj(json!({"v": "x"})))
        .unwrap_err();
    assert!(err.contains("\"v\"") && err.contains("strict"), "{err}");
    assert_eq!(seg.kind("v"), Some(&Kind::Float));
}

#[test]
fn the_column_limit_refuses_the_record_that_would_pass_it() {
    let settings = SchemaSettings {
        max_columns: 4,
        ..SchemaSettings::default()
    };
    let mut seg = Fields::default();
    assert!(
        settings
            .admit(&mut seg, &obj(json!({"a": 1, "b": {"c": 1}})))
            .is_ok()
    );
    let err = settings
        .admit(&mut seg, &obj(json!({"d": 1, "e": 2})))
        .unwrap_err();
    assert!(err.contains("5 columns, over max_columns = 4"), "{err}");
    assert!(settings.admit(&mut seg, &obj(json!({"d": 1}))).is_ok());
    assert_eq!(seg.columns(), 4);
}

#[test]
fn files_carry_the_evolving_schema_of_their_topic() {
    let settings = SchemaSettings::default();
    let mut evolving = Arc::new(Fields::default());
    let rules = InferRules::default();
    let mut first = Fields::default();
    first.merge_object(&obj(json!({"a": 1})), &rules);
    let mut second = Fields::default();
    second.merge_object(&obj(json!({"a": 2.5, "b": true})), &rules);
    settings.file_schema(&mut evolving, &first);
    let mut third = Fields::default();
    third.merge_object(&obj(json!({"b": false})), &rules);
    settings.file_schema(&mut evolving, &second);
    let FileSchema::Inferred(written) = settings.file_schema(&mut evolving, &third) else {
        panic!("infer mode writes inferred schemas");
    };
    let names: Vec<_> = written
        .iter()
        .map(|(n, k)| (n.to_string(), k.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("a".to_string(), Kind::Float),
            ("b".to_string(), Kind::Bool)
        ]
    );
}

#[test]
fn a_field_named_like_a_metadata_column_shadows_it_only_where_it_occurs() {
    let settings = SchemaSettings::default();
    let rules = InferRules::default();
    let mut evolving = Arc::new(Fields::default());
    let mut odd = Fields::default();
    odd.merge_object(&obj(json!({"_kafka_offset": "mine", "a": 1})), &rules);
    let written = settings.file_schema(&mut evolving, &odd);
    assert!(written.contains("_kafka_offset"));
    let mut plain = Fields::default();
    plain.merge_object(&obj(json!({"a": 2})), &rules);
    let written = settings.file_schema(&mut evolving, &plain);
    assert!(!written.contains("_kafka_offset") && written.contains("a"));
}

#[test]
fn overlong_field_names_are_refused() {
    let settings = SchemaSettings::default();
    let mut seg = Fields::default();
    let long = "n".repeat(MAX_FIELD_NAME_BYTES + 1);
    let err = settings
        .admit(&mut seg, &obj(json!({"o": {long: 1}})))
        .unwrap_err();
    assert!(err.contains("over 255 bytes"), "{err}");
    assert!(seg.is_empty());
}

#[test]
fn depth_counts_containers() {
    assert_eq!(depth(&json!(1)), 0);
    assert_eq!(depth(&json!({"a": [1, {"b": 2}]})), 3);
    assert_eq!(depth_of_object(&obj(json!({"a": [1, {"b": 2}]}))), 3);
    assert_eq!(depth_of_object(&obj(json!({}))), 1);
}

fn value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        (-5i64..5).prop_map(|n| Value::from(n as f64 + 0.5)),
        Just(json!("x")),
        Just(json!("2026-11-30T10:00:00Z")),
        Just(json!("2026-11-30")),
        Just(json!("q\"\n")),
        Just(json!(u64::MAX)),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![Just("a"), Just("b"), Just("payload")],
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

fn record() -> impl proptest::strategy::Strategy<Value = Map<String, Value>> {
    use proptest::strategy::Strategy as _;
    proptest::collection::btree_map(
        proptest::prelude::prop_oneof![
            proptest::strategy::Just("a"),
            proptest::strategy::Just("b"),
            proptest::strategy::Just("c"),
            proptest::strategy::Just("payload"),
            proptest::strategy::Just("_kafka_offset"),
        ],
        value(),
        0..4,
    )
    .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// Two records with the same keys and values drawn apart: often the same shape but for
/// one kind somewhere.
fn twins() -> impl proptest::strategy::Strategy<Value = [Map<String, Value>; 2]> {
    use proptest::prelude::*;
    proptest::collection::btree_set(
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("payload")],
        0..4,
    )
    .prop_flat_map(|keys| {
        let n = keys.len();
        (
            Just(keys),
            proptest::collection::vec(value(), n),
            proptest::collection::vec(value(), n),
        )
    })
    .prop_map(|(keys, one, two)| {
        let record = |values: Vec<Value>| {
            keys.iter()
                .zip(values)
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        };
        [record(one), record(two)]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(13),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// Admitting records by their shape (decoded off the run loop) decides, reshapes and
    /// grows the segment's schema exactly as admitting their objects does; a shape shared
    /// with the record before is the record's own.
    #[test]
    fn admitting_by_shape_is_admitting_by_object(
        records in proptest::collection::vec(record(), 1..20),
        strict in proptest::prelude::any::<bool>(),
        max_columns in 3usize..12,
    ) {
        let rules = InferRules {
            json_columns: ["payload".to_string(), "a.b".to_string()].into(),
            temporal_strings: true,
        };
        let settings = SchemaSettings {
            mode: SchemaMode::Infer {
                strict,
                rules: rules.clone(),
            },
            max_columns,
            ..SchemaSettings::default()
        };
        let mut by_object = Fields::default();
        let mut by_shape = Fields::default();
        let mut admitted = None;
        let mut last = None;
        for record in &records {
            let fit = settings.fit(record, &mut last);
            // The shape is the record's own schema, whether shared with the record
            // before or built.
            let mut own = Fields::default();
            own.merge_object(record, &rules);
            let Fit::Shape(shape) = &fit else {
                return Err(proptest::test_runner::TestCaseError::fail("not a shape"));
            };
            proptest::prop_assert_eq!(&**shape, &own);
            let again = || Ok(record.clone());
            proptest::prop_assert_eq!(
                settings.reshapes(&by_object, record),
                settings.reshapes_fit(&by_shape, &admitted, &fit, again)
            );
            let a = settings.admit(&mut by_object, record);
            let b = settings.admit_fit(&mut by_shape, &mut admitted, &fit, again);
            proptest::prop_assert_eq!(a, b);
            proptest::prop_assert_eq!(&by_object, &by_shape);
        }
    }

    /// Walking a payload against a shape (see `scan`) finds it described exactly when its
    /// decoded object is described and within the depth limit, and decodes the kept fields
    /// as decoding the whole object does.
    #[test]
    fn scanning_a_payload_is_describing_its_object(
        twins in proptest::collection::vec(twins(), 1..10),
        max_depth in 1usize..5,
        keep_b in proptest::prelude::any::<bool>(),
    ) {
        let rules = InferRules {
            json_columns: ["payload".to_string(), "a.b".to_string()].into(),
            temporal_strings: true,
        };
        let keep = |name: &str| name == "a" || (keep_b && name == "b");
        let records: Vec<_> = twins.into_iter().flatten().collect();
        let shapes: Vec<Fields> = records
            .iter()
            .map(|r| {
                let mut own = Fields::default();
                own.merge_object(r, &rules);
                own
            })
            .collect();
        // Every record against every record's shape: its own, its twin's, and others.
        for record in &records {
            let payload = serde_json::to_vec(record).unwrap();
            for shape in &shapes {
                let described = shape.describes(record, &rules)
                    && depth_of_object(record) <= max_depth;
                let kept = shape.describes_payload(&payload, &rules, max_depth, &keep);
                proptest::prop_assert_eq!(kept.is_some(), described);
                if let Some(kept) = kept {
                    let want: Vec<_> = record.iter().filter(|(k, _)| keep(k)).collect();
                    proptest::prop_assert_eq!(kept.iter().collect::<Vec<_>>(), want);
                }
            }
        }
    }
}
