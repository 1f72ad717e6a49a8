//! `steward-sim`: plays real Windows devices against a Steward server (or any MS-MDE2 server), for
//! integration tests, benchmarks and demos. It sends what Windows sends: the GET probe, Discover,
//! GetPolicies and a RequestSecurityToken with a freshly generated RSA key and a CSR shaped like
//! Windows' (PrintableString CN with `!` and a trailing NUL, the 1.3.6.1.4.1.311.66.1.0 DeviceID
//! extension, OIW sha1WithRSA signature).

pub mod enroll;
pub mod https;

pub use enroll::{Credentials, EnrollError, EnrollOptions, EnrolledDevice};
pub use https::{HttpsClient, HttpsError, Response};
