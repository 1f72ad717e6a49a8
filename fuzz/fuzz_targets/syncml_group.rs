//! Fuzz target `syncml_group`: the raw SyncML group of a profile setting. The property lives in
//! `steward_windows::fuzz_checks::syncml_group`, shared with the stable test that replays
//! fuzz/corpus/syncml_group.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| steward_windows::fuzz_checks::syncml_group(data));
