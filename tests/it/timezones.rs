//! `timezone` for `{ts:…}` in key templates, through the binary users run: records on either
//! side of New York's daylight-saving changes land in the directories of its wall clock, and
//! the same input routes the same way again.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use support::read;

/// The directory each record's id landed in.
fn routed(out: &Path) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    for (rel, rows) in read::all_parquet(out) {
        let dir = rel.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        for row in rows {
            let id = row["id"].as_str().unwrap().to_string();
            assert!(seen.insert(id, dir.clone()).is_none(), "an id twice");
        }
    }
    seen
}

#[tokio::test]
async fn records_route_by_the_zones_wall_clock_across_daylight_saving_changes() {
    let dir = tempfile::tempdir().unwrap();
    // UTC instants around the changes of 2026 in America/New_York.
    let events = [
        ("new-year", "2026-01-01T04:30:00Z"),      // 31 Dec, 23:30 EST
        ("before-spring", "2026-03-08T06:59:59Z"), // 01:59:59 EST
        ("after-spring", "2026-03-08T07:00:00Z"),  // 03:00 EDT: 02:00 never happens
        ("first-one-am", "2026-11-01T05:30:00Z"),  // 01:30 EDT
        ("second-one-am", "2026-11-01T06:30:00Z"), // 01:30 EST, an hour later
        ("two-am", "2026-11-01T07:30:00Z"),        // 02:30 EST
    ];
    let input: String = events
        .iter()
        .map(|(id, ts)| format!("{{\"id\":\"{id}\",\"ts\":\"{ts}\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("in.ndjson"), input).unwrap();
    let config = "[source]\nkind = \"file\"\npath = \"in.ndjson\"\n\
        [[destinations]]\nname = \"local\"\nurl = \"file://./out\"\n\
        key_template = \"dt={ts:%Y-%m-%d}/hour={ts:%H}/utc_offset={ts:%z}\"\n\
        timezone = \"America/New_York\"\ntimestamp = \"field:ts\"\n";
    std::fs::write(dir.path().join("pail.toml"), config).unwrap();
    let run = || {
        support::run_pail(
            &["run", "--config", "pail.toml"],
            dir.path(),
            &[],
            Duration::from_secs(60),
        )
    };
    let o = run().await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected: BTreeMap<String, String> = [
        ("new-year", "dt=2025-12-31/hour=23/utc_offset=-0500"),
        ("before-spring", "dt=2026-03-08/hour=01/utc_offset=-0500"),
        ("after-spring", "dt=2026-03-08/hour=03/utc_offset=-0400"),
        ("first-one-am", "dt=2026-11-01/hour=01/utc_offset=-0400"),
        ("second-one-am", "dt=2026-11-01/hour=01/utc_offset=-0500"),
        ("two-am", "dt=2026-11-01/hour=02/utc_offset=-0500"),
    ]
    .into_iter()
    .map(|(id, d)| (id.to_string(), d.to_string()))
    .collect();
    let out = dir.path().join("out");
    assert_eq!(routed(&out), expected);
    // Routing is a function of the record: a second run over the same input routes the same.
    std::fs::remove_dir_all(&out).unwrap();
    let o = run().await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(routed(&out), expected);
}
