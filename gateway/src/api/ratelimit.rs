//! Per-client token bucket (governor) on signup, login, refresh, the
//! password checks behind a token and introspection. Clients are keyed by
//! [`client_key`]: an IPv4 address, or an IPv6 /64. Buckets of clients gone
//! quiet are purged by a timer ([`purge_every`]), never on the request path.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Weak;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

use super::AppState;
use crate::client_key::client_key;
use crate::config::LimitsConfig;
use crate::error::Error;

/// How often buckets that have refilled completely are dropped.
pub const PURGE_EVERY: Duration = Duration::from_secs(60);

pub struct RateLimiter<C: Clock = DefaultClock> {
    inner: governor::RateLimiter<
        IpAddr,
        DefaultKeyedStateStore<IpAddr>,
        C,
        NoOpMiddleware<C::Instant>,
    >,
    clock: C,
}

impl RateLimiter {
    pub fn new(limits: &LimitsConfig) -> Self {
        Self::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    pub fn with_clock(limits: &LimitsConfig, clock: C) -> Self {
        let per_minute = NonZeroU32::new(limits.auth_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.auth_burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Self {
            inner: governor::RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
        }
    }

    /// Takes one token for the client at `ip` (its [`client_key`]), or says
    /// how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Error> {
        self.inner
            .check_key(&client_key(ip))
            .map_err(|not_until| Error::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }

    /// Clients with a bucket now.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the buckets that have refilled completely (they hold nothing
    /// a fresh bucket would not).
    pub fn purge(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }
}

/// Purges `limiter` every `period` until it is dropped.
pub async fn purge_every<C: Clock + Clone>(limiter: Weak<RateLimiter<C>>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        limiter.purge();
    }
}

pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let ip = super::extract::client_ip(&parts, &state.auth.config.server);
    if let Some(ip) = ip
        && let Err(e) = state.limiter.check(ip)
    {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limits(per_minute: u32, burst: u32) -> LimitsConfig {
        LimitsConfig {
            auth_per_minute: per_minute,
            auth_burst: burst,
            ..LimitsConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(crate::client_key::UNKNOWN)
    }

    /// Two IPv6 addresses of one /64 draw from one bucket; another /64 has
    /// its own.
    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let limiter = RateLimiter::with_clock(&limits(1, 1), FakeRelativeClock::default());
        assert!(limiter.check(ip("2001:db8:0:1::1")).is_ok());
        let same_64 = limiter.check(ip("2001:db8:0:1:dead:beef:0:2"));
        assert!(
            matches!(same_64, Err(Error::RateLimited { .. })),
            "{same_64:?}"
        );
        assert!(limiter.check(ip("2001:db8:0:2::1")).is_ok());
        assert_eq!(limiter.len(), 2);
    }

    /// Buckets of clients gone quiet are dropped by the timer, with no
    /// request coming in; the request path itself never purges.
    #[tokio::test]
    async fn buckets_are_purged_on_a_timer() {
        let clock = FakeRelativeClock::default();
        let limiter = Arc::new(RateLimiter::with_clock(&limits(60, 5), clock.clone()));
        for i in 0..3 {
            assert!(limiter.check(ip(&format!("192.0.2.{i}"))).is_ok());
        }
        assert_eq!(limiter.len(), 3);
        let purger = tokio::spawn(purge_every(
            Arc::downgrade(&limiter),
            Duration::from_millis(20),
        ));
        // Still draining: the buckets stay.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(limiter.len(), 3);
        // Refilled: the next tick drops them.
        clock.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(limiter.len(), 0);
        drop(limiter);
        tokio::time::timeout(Duration::from_secs(1), purger)
            .await
            .ok();
    }
}
