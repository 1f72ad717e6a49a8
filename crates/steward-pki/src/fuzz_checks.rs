//! The property the `csr_verify` fuzz target checks (`fuzz/` at the repository root, built with
//! cargo-fuzz), shared with the stable test that replays its committed corpus. It panics when the
//! property fails, which is how libFuzzer learns of a finding. Built only for tests and with the
//! `fuzzing` feature (which the fuzz crate enables).

use crate::verify_csr;

/// Target `csr_verify`: [`verify_csr`] on arbitrary DER never panics, and a request it accepts
/// has a key within the policy, whose SubjectPublicKeyInfo is taken byte for byte from the input
/// (we issue from that key alone); raising the policy's minimum above the key refuses it.
pub fn csr_verify(data: &[u8]) {
    let Ok(v) = verify_csr(data, 2048) else {
        return;
    };
    assert!(
        (2048..=8192).contains(&v.rsa_modulus_bits),
        "{} bits",
        v.rsa_modulus_bits
    );
    assert!(
        !v.spki_der.is_empty() && data.windows(v.spki_der.len()).any(|w| w == v.spki_der.as_slice()),
        "the SubjectPublicKeyInfo is not the request's own bytes"
    );
    assert_eq!(verify_csr(data, 0).as_ref(), Ok(&v), "the policy floor is 2048 bits");
    assert!(
        verify_csr(data, v.rsa_modulus_bits + 1).is_err(),
        "key below the policy accepted"
    );
}

#[cfg(test)]
mod tests {
    /// The committed corpus (and any local findings in fuzz/artifacts) through the target's
    /// check, on stable Rust.
    #[test]
    fn replay_fuzz_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let mut replayed = 0;
        for dir in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join("csr_verify")) else {
                continue;
            };
            for path in entries.flatten().map(|e| e.path()).filter(|p| p.is_file()) {
                let bytes = std::fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| super::csr_verify(&bytes)).is_err() {
                    panic!("fuzz input {} fails its target's check", path.display());
                }
                replayed += 1;
            }
        }
        assert!(replayed >= 3, "the committed csr_verify corpus is missing");
    }
}
