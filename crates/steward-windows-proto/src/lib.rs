//! Pure codecs for the Windows device-management protocols. No I/O lives here: every function takes
//! bytes or strings and returns typed values or XML text, so the server, the simulator, the fuzzers
//! and the tests all share one implementation.
//!
//! - [`mde2`]: MS-MDE2 enrollment (Discovery, MS-XCEP GetPolicies, MS-WSTEP RequestSecurityToken),
//!   SOAP 1.2 faults and the wap-provisioningdoc.
//! - [`syncml`]: OMA-DM 1.2 SyncML as Windows speaks it (MS-MDM).
//! - [`xml`]: the hardened XML reader (DTDs refused, [`xml::XmlLimits`] checked in a linear pre-scan
//!   before roxmltree builds a tree) and the escaping writer helpers both codecs use.

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_checks;
pub mod mde2;
pub mod syncml;
pub mod xml;
