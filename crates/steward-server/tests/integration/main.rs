//! Integration tests: the real server on 127.0.0.1:0 with real TLS, driven by the device simulator.
//! One test binary for the crate (link time on 2-core CI).

// Harness helpers outside #[test] functions: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acme;
mod adversarial;
mod api;
mod architecture;
mod at_rest;
mod backends;
mod common;
mod config_lock;
mod console;
mod device_tags;
mod dynamic_groups;
mod enrollment;
mod enrollment_faults;
mod faults;
mod fixtures;
mod interop;
mod invariants;
mod kek_rotation;
mod lifecycle;
mod limits;
mod load;
mod management;
mod probe;
mod profiles;
mod profiles_api;
mod readiness;
mod rollouts;
mod secret_logs;
mod tls_surfaces;
mod webhooks;
mod windows_sessions;
