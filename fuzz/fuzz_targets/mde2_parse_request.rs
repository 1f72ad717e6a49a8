//! Fuzz target `mde2_parse_request`: the MS-MDE2 SOAP request parser and the simulator-side
//! response parsers. The property lives in
//! `steward_windows_proto::fuzz_checks::mde2_parse_request`, shared with the stable test that
//! replays fuzz/corpus/mde2_parse_request.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| steward_windows_proto::fuzz_checks::mde2_parse_request(data));
