//! Fuzz target `syncml_round_trip`: SyncML parse, write, parse: same message, stable text. The
//! property lives in `steward_windows_proto::fuzz_checks::syncml_round_trip`, shared with the
//! stable test that replays fuzz/corpus/syncml_round_trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| steward_windows_proto::fuzz_checks::syncml_round_trip(data));
