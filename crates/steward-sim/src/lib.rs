//! `steward-sim`: plays real Windows devices against a Steward server (or any MS-MDE2 server), for
//! integration tests, benchmarks and demos. It sends what Windows sends: the GET probe, Discover,
//! GetPolicies and a RequestSecurityToken with a freshly generated RSA key and a CSR shaped like
//! Windows' (PrintableString CN with `!` and a trailing NUL, the 1.3.6.1.4.1.311.66.1.0 DeviceID
//! extension, OIW sha1WithRSA signature). After enrolling, [`ManagedDevice`] runs OMA-DM management
//! sessions (MS-MDM) against a [`CspTree`] shaped like a Windows 11 device's, polling on the
//! DMClient schedule ([`poll`]). A [`Fleet`] runs many devices at once, and [`load::run_load`] turns
//! that into a load test with latency percentiles and server RSS/CPU figures.

pub mod csp;
pub mod enroll;
pub mod fleet;
pub mod https;
pub mod load;
pub mod poll;
pub mod ratelimit;
pub mod session;
pub mod stats;

pub use csp::{CspError, CspTree, DeviceProfile, Format};
pub use enroll::{Credentials, EnrollError, EnrollOptions, EnrolledDevice, enroll_with_key};
pub use fleet::{CheckinMode, CheckinPlan, EnrollPlan, Fleet, FleetError, KeyPool, KeySource, PhaseStats};
pub use https::{HttpsClient, HttpsError, Response, TlsProfile};
pub use load::{LoadConfig, LoadError, LoadReport, Phase, PhaseReport, Progress, run_load};
pub use poll::{PollSchedule, PollSet};
pub use ratelimit::RateLimiter;
pub use session::{
    GenericAlert, LoginStatus, ManagedDevice, Md5Credentials, ReceivedCommand, SessionError, SessionOptions,
    SessionReport, SessionTrigger,
};
