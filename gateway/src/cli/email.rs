//! `authgw email`: test the transport, read the outbox, requeue failures.

use clap::Subcommand;

use super::{Failure, actor, connect};
use crate::config::Config;
use crate::error::Error;
use crate::mail::{Kind, Locale, Transport, build_message};
use crate::store::{audit, outbox};

#[derive(Subcommand)]
pub enum EmailCommand {
    /// Send one test message now (not through the outbox) and print what
    /// the server answered.
    Test {
        /// The recipient.
        #[arg(long, value_name = "ADDR")]
        to: String,
    },
    /// List the outbox, newest first (no bodies).
    Outbox {
        /// Only messages given up on.
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Queue failed messages again, due now with fresh attempts.
    Retry {
        /// The message's id (from `authgw email outbox`).
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        id: Option<i64>,
        /// Every failed message.
        #[arg(long)]
        all_failed: bool,
    },
}

pub fn run(config: &Config, cmd: EmailCommand) -> Result<(), Failure> {
    match cmd {
        EmailCommand::Test { to } => test(config, &to),
        EmailCommand::Outbox { failed, limit } => {
            if !(1..=10_000).contains(&limit) {
                return Err(Failure::Usage("--limit must be between 1 and 10000".into()));
            }
            let rows = outbox::list(&mut connect(config)?, failed, limit)?;
            println!("id\tstatus\tkind\trecipient\tattempts\twhen\tlast error");
            for r in rows {
                let when = match r.status.as_str() {
                    "sent" => format!("sent {}", fmt_time(r.sent_at.unwrap_or(r.created_at))),
                    "queued" => format!("due {}", fmt_time(r.next_attempt_at)),
                    _ => format!("queued {}", fmt_time(r.created_at)),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{when}\t{}",
                    r.id,
                    r.status,
                    r.kind,
                    r.recipient,
                    r.attempts,
                    r.last_error.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        EmailCommand::Retry { id, all_failed } => {
            let mut client = connect(config)?;
            let mut tx = client.transaction().map_err(Error::from)?;
            if let Some(id) = id {
                match outbox::status(&mut tx, id)? {
                    None => {
                        return Err(Failure::Runtime(Error::NotFound {
                            what: "message",
                            name: id.to_string(),
                        }));
                    }
                    Some(s) if s == "sent" => {
                        return Err(Failure::Usage(format!(
                            "message {id} was sent already; its body is gone"
                        )));
                    }
                    Some(_) => {}
                }
            }
            let n = outbox::requeue(&mut tx, if all_failed { None } else { id })?;
            let target = id.map_or_else(|| "all-failed".to_string(), |i| i.to_string());
            audit::record(
                &mut tx,
                &actor(),
                "email.retry",
                &target,
                &serde_json::json!({ "requeued": n }),
            )?;
            tx.commit().map_err(Error::from)?;
            println!("requeued {n} message(s)");
            Ok(())
        }
    }
}

fn fmt_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Sends the `test` message through the configured transport, waiting for
/// the server's answer.
fn test(config: &Config, to: &str) -> Result<(), Failure> {
    if !crate::mail::is_deliverable(to) {
        return Err(Failure::Usage(format!(
            "--to {to:?} is not an e-mail address"
        )));
    }
    let base = config.base_dir();
    let composer = crate::mail::Composer::new(&config.email, &base)
        .map_err(|e| Failure::Runtime(Error::Internal(format!("email.templates_dir: {e}"))))?;
    let rendered = composer.render(Kind::Test, Locale::En);
    let message = build_message(
        &config.email.from,
        to,
        &rendered.subject,
        &rendered.text,
        &rendered.html,
    )
    .map_err(Failure::Usage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(Error::internal(e)))?;
    let sent = runtime.block_on(async {
        let transport = Transport::from_config(&config.email, &base, |k| std::env::var(k).ok())
            .map_err(|e| Failure::Runtime(Error::Internal(format!("{}: {}", e.key, e.reason))))?;
        transport.send(&message).await.map_err(|e| {
            Failure::Runtime(Error::Internal(format!(
                "not sent to {to} via {}: {}",
                transport.describe(),
                e.message
            )))
        })
    })?;
    if sent.starts_with("written to") {
        println!("{sent}");
    } else {
        println!("sent to {to} {sent}");
    }
    Ok(())
}
