//! Per-IP token bucket (governor) on signup, login and refresh.

use std::net::IpAddr;
use std::num::NonZeroU32;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::AppState;
use crate::config::LimitsConfig;
use crate::error::Error;

pub struct RateLimiter {
    inner: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl RateLimiter {
    pub fn new(limits: &LimitsConfig) -> Self {
        let per_minute = NonZeroU32::new(limits.auth_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.auth_burst).unwrap_or(NonZeroU32::MIN);
        Self {
            inner: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one token for `ip`, or says how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Error> {
        self.inner
            .check_key(&ip)
            .map_err(|not_until| Error::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            })?;
        if self.inner.len() > 100_000 {
            self.inner.retain_recent();
        }
        Ok(())
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
