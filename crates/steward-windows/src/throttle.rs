//! Per-device and per-address limits of the device surfaces that the connection caps cannot give:
//! how many management requests one enrollment may have in flight at once, and how fast one peer
//! address may call Discover. Both are per process: replicas behind a load balancer each enforce
//! their own (a device's requests normally reach one of them at a time anyway).
//!
//! Over a limit the device gets a retryable answer (503 with `Retry-After`), never a refusal that
//! would end its enrollment, and no other device is touched: the counts are keyed by the
//! enrollment and by the peer address the TCP connection came from (forwarded headers are never
//! read; the trusted proxies are exempt from the address limit, as from the connection caps, since
//! every device behind them shares their address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use steward_core::EnrollmentId;

/// Management requests in flight, per enrollment.
#[derive(Debug)]
pub struct DeviceSessions {
    max: usize,
    in_flight: Mutex<HashMap<EnrollmentId, usize>>,
}

/// One admitted request; the count drops when it is dropped (the answer was built, or the request
/// failed, or the client went away and the handler was cancelled).
#[derive(Debug)]
pub struct SessionSlot {
    owner: Arc<DeviceSessions>,
    enrollment: EnrollmentId,
}

impl DeviceSessions {
    /// At most `max` (≥ 1) requests of one enrollment at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `enrollment`, or None when it already has `max` requests in flight.
    pub fn try_enter(self: &Arc<Self>, enrollment: EnrollmentId) -> Option<SessionSlot> {
        let mut map = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(enrollment).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SessionSlot {
            owner: self.clone(),
            enrollment,
        })
    }

    /// Requests of `enrollment` in flight now (tests and diagnostics).
    pub fn in_flight(&self, enrollment: EnrollmentId) -> usize {
        let map = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&enrollment).copied().unwrap_or(0)
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut map = self
            .owner
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.enrollment) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.enrollment);
            }
        }
    }
}

/// A token bucket per peer address: `per_minute` requests of burst, refilled at `per_minute` a
/// minute. 0 turns it off.
#[derive(Debug)]
pub struct AddressRate {
    per_minute: u32,
    exempt: Vec<IpAddr>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Addresses remembered before full buckets are forgotten (a full bucket is the same as none).
const PRUNE_ABOVE: usize = 10_000;

impl AddressRate {
    pub fn new(per_minute: u32, exempt: Vec<IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            per_minute,
            exempt,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a request from `peer` may proceed now (and counts it). A request without a known
    /// peer address (not over TCP) is not limited here.
    pub fn allow(&self, peer: Option<IpAddr>) -> bool {
        self.allow_at(peer, Instant::now())
    }

    fn allow_at(&self, peer: Option<IpAddr>, now: Instant) -> bool {
        let Some(peer) = peer else { return true };
        if self.per_minute == 0 || self.exempt.contains(&peer) {
            return true;
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut map = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < capacity);
        }
        let b = map.entry(peer).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_device_gets_at_most_max_slots_and_others_are_unaffected() {
        let sessions = DeviceSessions::new(2);
        let (a, b) = (EnrollmentId::new(), EnrollmentId::new());
        let s1 = sessions.try_enter(a).unwrap();
        let s2 = sessions.try_enter(a).unwrap();
        assert!(sessions.try_enter(a).is_none(), "a third at once is refused");
        let other = sessions.try_enter(b).expect("another device is unaffected");
        drop(s1);
        let s3 = sessions.try_enter(a).expect("a slot frees when a request ends");
        assert_eq!(sessions.in_flight(a), 2);
        drop((s2, s3, other));
        assert_eq!(sessions.in_flight(a), 0);
        assert!(
            sessions.in_flight.lock().unwrap().is_empty(),
            "nothing kept for idle devices"
        );
    }

    #[test]
    fn an_address_gets_its_burst_then_refills_and_others_are_unaffected() {
        let proxy: IpAddr = [10, 0, 0, 1].into();
        let rate = AddressRate::new(3, vec![proxy]);
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rate.allow_at(Some(a), t0));
        }
        assert!(!rate.allow_at(Some(a), t0), "over the burst");
        assert!(rate.allow_at(Some(b), t0), "another address is unaffected");
        assert!(
            (0..100).all(|_| rate.allow_at(Some(proxy), t0)),
            "trusted proxies are exempt"
        );
        assert!(rate.allow_at(None, t0));
        // 3 a minute: one more token after 20 s.
        assert!(!rate.allow_at(Some(a), t0 + Duration::from_secs(19)));
        assert!(rate.allow_at(Some(a), t0 + Duration::from_secs(30)));
        assert!(!rate.allow_at(Some(a), t0 + Duration::from_secs(30)));
        let off = AddressRate::new(0, Vec::new());
        assert!((0..1000).all(|_| off.allow_at(Some(a), t0)), "0 turns it off");
    }
}
