//! Fuzz target `xml_parse`: the hardened XML reader (pre-scan + roxmltree) under default and tight
//! limits. The property lives in `steward_windows_proto::fuzz_checks::xml_parse`, shared with the
//! stable test that replays fuzz/corpus/xml_parse.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| steward_windows_proto::fuzz_checks::xml_parse(data));
