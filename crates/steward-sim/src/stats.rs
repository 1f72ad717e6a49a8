//! Measurement helpers for load runs: latency percentiles, error classification, and process
//! RSS / CPU from `/proc`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::enroll::EnrollError;
use crate::https::HttpsError;
use crate::session::SessionError;

// ---- Latency ----

/// Every latency sample of a phase, in microseconds. A sorted `Vec<u32>` gives exact percentiles;
/// at 4 bytes a sample, even millions of sessions cost only megabytes, so no HDR approximation is
/// needed.
#[derive(Debug, Clone, Default)]
pub struct LatencyRecorder {
    samples_us: Vec<u32>,
}

/// Percentiles in milliseconds (nearest-rank).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencyRecorder {
    pub fn record(&mut self, d: Duration) {
        // Saturate at ~71 minutes; nothing in a load run legitimately takes longer.
        self.samples_us.push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn len(&self) -> usize {
        self.samples_us.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples_us.is_empty()
    }

    pub fn summary(&self) -> LatencySummary {
        let mut s = self.samples_us.clone();
        s.sort_unstable();
        let ms = |us: u32| f64::from(us) / 1000.0;
        let total: u64 = s.iter().map(|&v| u64::from(v)).sum();
        LatencySummary {
            count: s.len() as u64,
            mean_ms: if s.is_empty() {
                0.0
            } else {
                total as f64 / s.len() as f64 / 1000.0
            },
            p50_ms: nearest_rank(&s, 0.50).map_or(0.0, ms),
            p90_ms: nearest_rank(&s, 0.90).map_or(0.0, ms),
            p99_ms: nearest_rank(&s, 0.99).map_or(0.0, ms),
            max_ms: s.last().copied().map_or(0.0, ms),
        }
    }
}

/// The nearest-rank percentile of sorted samples: the smallest value with at least `q` of the
/// samples at or below it (rank `ceil(q·n)`, 1-based). Unlike interpolation it always returns a
/// latency that was actually observed.
pub fn nearest_rank(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

// ---- Errors by kind ----

/// What went wrong, coarse enough to count: the report groups errors by [`ErrorKind::key`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// TCP connect failed (refused, unreachable, out of ports).
    Connect,
    /// TLS setup or handshake failed.
    Tls,
    /// The HTTP exchange broke (reset, closed mid-response).
    HttpTransport,
    /// The server answered with this non-success HTTP status (and no SOAP fault).
    HttpStatus(u16),
    /// An MS-MDE2 SOAP fault with this subcode.
    SoapFault(String),
    /// A management response that is not valid SyncML.
    SyncMl,
    /// The SyncML-level credential exchange failed (401/407 in the SyncHdr status).
    SyncMlAuth,
    /// Anything else the protocol did not allow (unexpected document, missing element, too many
    /// messages).
    Protocol,
    /// The device was wiped or unenrolled and cannot open sessions.
    DeviceState,
    /// Key or CSR building failed on our side.
    Key,
    /// The operation exceeded the per-operation timeout.
    Timeout,
}

impl ErrorKind {
    /// Stable key for reports: `tls`, `http:503`, `soap:s:MessageFormat`, `syncml`, …
    pub fn key(&self) -> String {
        match self {
            ErrorKind::Connect => "connect".into(),
            ErrorKind::Tls => "tls".into(),
            ErrorKind::HttpTransport => "http-transport".into(),
            ErrorKind::HttpStatus(s) => format!("http:{s}"),
            ErrorKind::SoapFault(sub) => format!("soap:{sub}"),
            ErrorKind::SyncMl => "syncml".into(),
            ErrorKind::SyncMlAuth => "syncml-auth".into(),
            ErrorKind::Protocol => "protocol".into(),
            ErrorKind::DeviceState => "device-state".into(),
            ErrorKind::Key => "key".into(),
            ErrorKind::Timeout => "timeout".into(),
        }
    }

    pub fn from_https(e: &HttpsError) -> Self {
        match e {
            HttpsError::Connect { .. } => ErrorKind::Connect,
            HttpsError::Tls(_) | HttpsError::Handshake { .. } => ErrorKind::Tls,
            HttpsError::Http(_) => ErrorKind::HttpTransport,
            HttpsError::Url(_) => ErrorKind::Protocol,
        }
    }

    pub fn from_enroll(e: &EnrollError) -> Self {
        match e {
            EnrollError::Https(h) => Self::from_https(h),
            EnrollError::Fault { subcode, .. } => ErrorKind::SoapFault(subcode.clone()),
            // The enrollment client reports a bare non-success status as a Protocol error whose
            // message starts "HTTP <code>"; recover the code so statuses are counted apart.
            EnrollError::Protocol { message, .. } => {
                http_code_in(message).map_or(ErrorKind::Protocol, ErrorKind::HttpStatus)
            }
            EnrollError::Pki(_) => ErrorKind::Key,
            EnrollError::Refused(_) => ErrorKind::Protocol,
        }
    }

    pub fn from_session(e: &SessionError) -> Self {
        match e {
            SessionError::Https(h) => Self::from_https(h),
            SessionError::HttpStatus { status, .. } => ErrorKind::HttpStatus(*status),
            SessionError::Parse(_) => ErrorKind::SyncMl,
            SessionError::AuthRequired { .. } | SessionError::AuthFailed { .. } => ErrorKind::SyncMlAuth,
            SessionError::Protocol(_) | SessionError::TooManyMessages(_) | SessionError::NoSession => {
                ErrorKind::Protocol
            }
            SessionError::DeviceWiped | SessionError::Unenrolled => ErrorKind::DeviceState,
        }
    }
}

/// `"HTTP 503 Service Unavailable"` → 503.
fn http_code_in(message: &str) -> Option<u16> {
    let rest = message.strip_prefix("HTTP ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|c| (100..=999).contains(c))
}

/// Error counts by [`ErrorKind::key`].
pub type ErrorCounts = BTreeMap<String, u64>;

// ---- /proc ----

/// Linux's USER_HZ: `/proc/<pid>/stat` reports CPU time in these ticks. It is 100 on every
/// mainstream architecture, and reading sysconf would need libc (and unsafe).
pub const CLK_TCK: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: unexpected format")]
    Format { path: String },
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// Resident set size (VmRSS), bytes.
    pub rss_bytes: u64,
    /// utime + stime, in [`CLK_TCK`] ticks.
    pub cpu_ticks: u64,
}

/// `VmRSS:   123456 kB` → bytes.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime (fields 14 and 15) from `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are counted from the
/// last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14 → index 11, stime index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Reads `/proc/<pid>` (`None`: this process).
pub fn read_proc(pid: Option<u32>) -> Result<ProcSample, ProcError> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let read = |name: &str| {
        let path = format!("{dir}/{name}");
        std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
    };
    let status = read("status")?;
    let stat = read("stat")?;
    let rss_bytes = parse_vmrss(&status).ok_or_else(|| ProcError::Format {
        path: format!("{dir}/status"),
    })?;
    let cpu_ticks = parse_cpu_ticks(&stat).ok_or_else(|| ProcError::Format {
        path: format!("{dir}/stat"),
    })?;
    Ok(ProcSample { rss_bytes, cpu_ticks })
}

/// RSS and CPU of one process over a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcReport {
    pub pid: Option<u32>,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
    pub rss_max_bytes: u64,
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
    /// `cpu_seconds / wall_seconds`: 1.0 = one core busy the whole time.
    pub cpu_utilisation: f64,
    pub samples: u64,
}

/// Accumulates samples of one process; fed every 500 ms by the load runner.
#[derive(Debug, Clone)]
pub struct ProcTracker {
    pid: Option<u32>,
    start: ProcSample,
    last: ProcSample,
    max_rss: u64,
    samples: u64,
    started: std::time::Instant,
}

impl ProcTracker {
    pub fn start(pid: Option<u32>) -> Result<Self, ProcError> {
        let s = read_proc(pid)?;
        Ok(Self {
            pid,
            start: s,
            last: s,
            max_rss: s.rss_bytes,
            samples: 1,
            started: std::time::Instant::now(),
        })
    }

    /// Takes a sample; a process that has gone away keeps its last reading (and the error is
    /// returned for the caller to note).
    pub fn sample(&mut self) -> Result<ProcSample, ProcError> {
        let s = read_proc(self.pid)?;
        self.last = s;
        self.max_rss = self.max_rss.max(s.rss_bytes);
        self.samples += 1;
        Ok(s)
    }

    pub fn last(&self) -> ProcSample {
        self.last
    }

    pub fn report(&self) -> ProcReport {
        let wall = self.started.elapsed().as_secs_f64();
        let cpu = self.last.cpu_ticks.saturating_sub(self.start.cpu_ticks) as f64 / CLK_TCK as f64;
        ProcReport {
            pid: self.pid,
            rss_start_bytes: self.start.rss_bytes,
            rss_end_bytes: self.last.rss_bytes,
            rss_max_bytes: self.max_rss,
            cpu_seconds: cpu,
            wall_seconds: wall,
            cpu_utilisation: if wall > 0.0 { cpu / wall } else { 0.0 },
            samples: self.samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_windows_proto::syncml::SyncMlError;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 0.50), Some(50));
        assert_eq!(nearest_rank(&v, 0.90), Some(90));
        assert_eq!(nearest_rank(&v, 0.99), Some(99));
        assert_eq!(nearest_rank(&v, 1.0), Some(100));
        assert_eq!(nearest_rank(&v, 0.0), Some(1));
        assert_eq!(nearest_rank(&[], 0.5), None);
        assert_eq!(nearest_rank(&[7], 0.99), Some(7));
        // Ten samples: p50 is the 5th, p90 the 9th, p99 rounds up to the 10th.
        let v: Vec<u32> = (1..=10).map(|x| x * 10).collect();
        assert_eq!(nearest_rank(&v, 0.5), Some(50));
        assert_eq!(nearest_rank(&v, 0.9), Some(90));
        assert_eq!(nearest_rank(&v, 0.99), Some(100));
    }

    #[test]
    fn summary_in_milliseconds_from_unsorted_samples() {
        let mut r = LatencyRecorder::default();
        assert_eq!(r.summary(), LatencySummary::default());
        for ms in [40u64, 10, 30, 20, 1000] {
            r.record(Duration::from_millis(ms));
        }
        let s = r.summary();
        assert_eq!(s.count, 5);
        assert_eq!(s.p50_ms, 30.0);
        assert_eq!(s.p90_ms, 1000.0);
        assert_eq!(s.max_ms, 1000.0);
        assert!((s.mean_ms - 220.0).abs() < 1e-9);
        r.record(Duration::from_secs(100_000));
        assert_eq!(r.summary().max_ms, f64::from(u32::MAX) / 1000.0, "saturates");
    }

    #[test]
    fn errors_by_kind() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let connect = HttpsError::Connect {
            addr: "127.0.0.1:1".into(),
            source: io(),
        };
        assert_eq!(ErrorKind::from_https(&connect).key(), "connect");
        let hs = HttpsError::Handshake {
            host: "localhost".into(),
            source: io(),
        };
        assert_eq!(ErrorKind::from_enroll(&EnrollError::Https(hs)).key(), "tls");
        assert_eq!(
            ErrorKind::from_session(&SessionError::Https(HttpsError::Http("reset".into()))).key(),
            "http-transport"
        );
        let fault = EnrollError::Fault {
            step: "enroll",
            status: 500,
            subcode: "s:Authentication".into(),
            reason: "bad token".into(),
        };
        assert_eq!(ErrorKind::from_enroll(&fault).key(), "soap:s:Authentication");
        let bare = EnrollError::Protocol {
            step: "probe",
            message: "HTTP 503 Service Unavailable".into(),
        };
        assert_eq!(ErrorKind::from_enroll(&bare), ErrorKind::HttpStatus(503));
        let other = EnrollError::Protocol {
            step: "enroll",
            message: "no w7 ADDR".into(),
        };
        assert_eq!(ErrorKind::from_enroll(&other).key(), "protocol");
        let status = SessionError::HttpStatus {
            status: 401,
            body: String::new(),
        };
        assert_eq!(ErrorKind::from_session(&status).key(), "http:401");
        let parse = SessionError::Parse(SyncMlError::Missing("SyncHdr"));
        assert_eq!(ErrorKind::from_session(&parse).key(), "syncml");
        assert_eq!(
            ErrorKind::from_session(&SessionError::AuthFailed { code: 401 }).key(),
            "syncml-auth"
        );
        assert_eq!(
            ErrorKind::from_session(&SessionError::TooManyMessages(64)).key(),
            "protocol"
        );
        assert_eq!(ErrorKind::from_session(&SessionError::Unenrolled).key(), "device-state");
        assert_eq!(ErrorKind::Timeout.key(), "timeout");
    }

    #[test]
    fn proc_parsing() {
        let status = "Name:\tsteward\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vmrss(status), Some(12345 * 1024));
        assert_eq!(parse_vmrss("Name: x\n"), None);
        // A command name with spaces and a ')' must not shift the fields.
        let stat = "4242 (my (weird) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 4 0 100 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn reads_own_process() {
        let mut t = ProcTracker::start(None).unwrap();
        assert!(t.last().rss_bytes > 0);
        t.sample().unwrap();
        let r = t.report();
        assert_eq!(r.samples, 2);
        assert!(r.rss_max_bytes >= r.rss_start_bytes);
    }
}
