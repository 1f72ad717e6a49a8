//! Fuzz target `profile_settings`: `WindowsAdapter::profile_settings` over arbitrary JSON. The
//! property lives in `steward_windows::fuzz_checks::profile_settings`, shared with the stable test
//! that replays fuzz/corpus/profile_settings.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| steward_windows::fuzz_checks::profile_settings(data));
