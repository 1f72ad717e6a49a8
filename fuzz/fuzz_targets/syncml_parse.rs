//! Fuzz target `syncml_parse`: the SyncML parser on raw HTTP bodies. The property lives in
//! `steward_windows_proto::fuzz_checks::syncml_parse`, shared with the stable test that replays
//! fuzz/corpus/syncml_parse.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| steward_windows_proto::fuzz_checks::syncml_parse(data));
