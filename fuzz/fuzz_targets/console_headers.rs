//! Fuzz target `console_headers`: the console's session-cookie and Origin parsing. The property
//! lives in `steward_console::fuzz_checks::console_headers`, shared with the stable test that
//! replays fuzz/corpus/console_headers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| steward_console::fuzz_checks::console_headers(data));
