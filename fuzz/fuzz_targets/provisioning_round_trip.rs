//! Fuzz target `provisioning_round_trip`: wap-provisioningdoc writer, read back with the XML
//! reader. The property lives in `steward_windows_proto::fuzz_checks::provisioning_round_trip`,
//! shared with the stable test that replays fuzz/corpus/provisioning_round_trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| steward_windows_proto::fuzz_checks::provisioning_round_trip(data));
