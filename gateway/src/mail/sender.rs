//! The background sender: drains the outbox through the [`Transport`].
//!
//! Each pass claims due messages (`store::outbox::claim`: `FOR UPDATE SKIP
//! LOCKED` and a lease, so several processes share one outbox), sends them
//! one by one and records the outcome: sent (bodies dropped), due again
//! after an exponential backoff, or failed for good after
//! `email.max_attempts` or a permanent refusal (5xx). It wakes when this
//! process queues a message, and every `email.poll_interval` for the rest.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Transport, build_message};
use crate::config::EmailConfig;
use crate::metrics::Metrics;
use crate::store::Db;
use crate::store::outbox::{self, Claimed};

/// Messages claimed at a time: one, so that a claim's lease covers one
/// delivery. Sends are sequential; with a batch, a slow server could let
/// the last messages' leases run out before their turn, and another
/// process would send them too.
const BATCH: i64 = 1;

pub struct Sender {
    pub db: Db,
    pub transport: Transport,
    pub config: EmailConfig,
    pub metrics: Arc<Metrics>,
    pub bell: Arc<Notify>,
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Sent,
    Retry,
    Failed,
}

impl Sender {
    /// Runs until the task is aborted.
    pub async fn run(self) {
        tracing::info!(transport = %self.transport.describe(), "mail sender started");
        loop {
            self.drain().await;
            match self.db.run(outbox::stats).await {
                Ok(stats) => self.metrics.set_outbox(stats),
                Err(e) => tracing::debug!(error = %e, "outbox statistics unavailable"),
            }
            tokio::select! {
                _ = self.bell.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Sends every due message, one claim at a time.
    async fn drain(&self) {
        let lease = super::lease(&self.config);
        loop {
            let batch = match self.db.run(move |c| outbox::claim(c, BATCH, lease)).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim outbox messages; retrying later");
                    return;
                }
            };
            if batch.is_empty() {
                return;
            }
            for message in batch {
                self.deliver(message).await;
            }
        }
    }

    async fn deliver(&self, m: Claimed) {
        let result = match build_message(
            &self.config.from,
            &m.recipient,
            &m.subject,
            &m.text,
            &m.html,
        ) {
            Ok(message) => self.transport.send(&message).await,
            Err(why) => Err(super::SendError {
                permanent: true,
                message: format!("cannot build the message: {why}"),
            }),
        };
        let (outcome, error, retry_in) = match result {
            Ok(detail) => {
                tracing::info!(id = m.id, kind = %m.kind, recipient = %m.recipient, %detail, "mail sent");
                (Outcome::Sent, None, None)
            }
            Err(e) => {
                let last = e.permanent || m.attempts as u32 >= self.config.max_attempts;
                let retry_in = (!last).then(|| backoff(&self.config, m.attempts as u32));
                tracing::warn!(
                    id = m.id,
                    kind = %m.kind,
                    recipient = %m.recipient,
                    attempt = m.attempts,
                    error = %e.message,
                    retry_in = ?retry_in,
                    "mail not sent"
                );
                let outcome = if last {
                    Outcome::Failed
                } else {
                    Outcome::Retry
                };
                (outcome, Some(e.message), retry_in)
            }
        };
        let id = m.id;
        let recorded = self
            .db
            .run(move |c| match outcome {
                Outcome::Sent => outbox::mark_sent(c, id),
                _ => outbox::mark_attempt_failed(c, id, error.as_deref().unwrap_or(""), retry_in),
            })
            .await;
        if let Err(e) = recorded {
            // The lease brings the row back: it is sent again rather than lost.
            tracing::warn!(id, error = %e, "cannot record the outcome of a delivery");
        }
        match outcome {
            Outcome::Sent => self.metrics.email_sent(),
            Outcome::Retry => self.metrics.email_send_error(false),
            Outcome::Failed => self.metrics.email_send_error(true),
        }
    }
}

/// The wait before attempt `attempts + 1`: `retry_base * 2^(attempts-1)`,
/// at most `retry_max`.
pub fn backoff(config: &EmailConfig, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(30));
    config
        .retry_base
        .checked_mul(factor)
        .unwrap_or(config.retry_max)
        .min(config.retry_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 30 s, 60 s, 120 s... capped at retry_max.
    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = EmailConfig::default();
        assert_eq!(backoff(&config, 1), Duration::from_secs(30));
        assert_eq!(backoff(&config, 2), Duration::from_secs(60));
        assert_eq!(backoff(&config, 4), Duration::from_secs(240));
        assert_eq!(backoff(&config, 8), Duration::from_secs(3600));
        assert_eq!(backoff(&config, 1000), Duration::from_secs(3600));
    }
}
