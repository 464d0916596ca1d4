//! pail's integration tests: one test binary with a module per area (ripgrep's layout), so the
//! suite links once. Twenty-odd binaries of a crate this size took ~500 MB each in a debug
//! build and filled a CI disk.
//!
//! Most areas run the `pail` binary as users get it (`support::pail_bin`, `PAIL_BIN` under CI);
//! a few drive `pail::run` in process. Run one area with a filter:
//! `bash scripts/test.sh --test it offsets::`.

mod support;

mod bad_input;
#[path = "../../benches/suite/scenario.rs"]
mod bench_scenario;
mod bench_smoke;
mod cli;
mod commits;
mod connection_test;
mod consume;
mod crash_group;
mod crash_single;
mod deploy;
mod destination_health;
mod error_classes;
mod fuzz_input;
mod interop;
mod kafka_to_s3;
mod memory_budget;
mod metrics;
mod moto_credentials;
mod moto_least_privilege;
mod multipart;
mod offsets;
mod outage;
mod progress;
mod properties;
mod regression;
mod replay;
mod s3_faults;
mod s3_options;
mod schema_drift;
mod schema_modes;
mod shutdown;
mod store_conformance;
mod streaming;
mod timezones;
mod undeliverable;
mod web_identity;
