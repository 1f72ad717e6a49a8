//! Fuzz target `csr_verify`: PKCS#10 verification. The property lives in
//! `steward_pki::fuzz_checks::csr_verify`, shared with the stable test that replays
//! fuzz/corpus/csr_verify.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| steward_pki::fuzz_checks::csr_verify(data));
