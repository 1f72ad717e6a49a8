//! A token bucket for pacing enrollments. Uses tokio's clock so tests can run it under
//! `tokio::time::pause`.

use tokio::time::{Duration, Instant};

/// Hands out `rate` permits per second on average, at most `burst` at once. One consumer (the
/// dispatcher loop) takes permits, so it needs `&mut self` and no locking.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `rate` per second; a rate that is not a positive finite number means unlimited. `burst` is
    /// the bucket size (at least 1); with 1 the permits are evenly spaced, which is what a steady
    /// enrollment rate should look like to the server.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            // Start full so the first permit is immediate.
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn unlimited(&self) -> bool {
        !(self.rate.is_finite() && self.rate > 0.0)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Waits until a permit is available and takes it.
    pub async fn acquire(&mut self) {
        if self.unlimited() {
            return;
        }
        self.refill(Instant::now());
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.refill(Instant::now());
        }
        // After the sleep the bucket holds ≥ 1 up to float rounding; never let rounding carry a
        // deficit forward as extra delay, nor a surplus as an extra permit.
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_evenly_at_the_rate() {
        let mut rl = RateLimiter::new(5.0, 1);
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..11 {
            rl.acquire().await;
            at.push(start.elapsed());
        }
        assert_eq!(at[0], Duration::ZERO, "first permit at once");
        for w in at.windows(2) {
            let gap = (w[1] - w[0]).as_secs_f64();
            assert!((gap - 0.2).abs() < 0.002, "gap {gap}");
        }
        assert!(
            (at[10].as_secs_f64() - 2.0).abs() < 0.01,
            "10 permits after the first take 2 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate_and_idle_refills_only_to_burst() {
        let mut rl = RateLimiter::new(10.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            rl.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the bucket starts full");
        rl.acquire().await;
        assert!((start.elapsed().as_secs_f64() - 0.1).abs() < 0.002);
        // A long idle period earns at most `burst` permits.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let t = Instant::now();
        for _ in 0..3 {
            rl.acquire().await;
        }
        assert_eq!(t.elapsed(), Duration::ZERO);
        rl.acquire().await;
        assert!((t.elapsed().as_secs_f64() - 0.1).abs() < 0.002);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_rate_is_unlimited() {
        let mut rl = RateLimiter::new(0.0, 1);
        let start = Instant::now();
        for _ in 0..1000 {
            rl.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
