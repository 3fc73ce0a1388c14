//! Account recovery use cases: verifying an address, changing it, and
//! resetting a forgotten password through a link mailed to it. Every
//! message is queued in the outbox inside the transaction of the action
//! that causes it (`mail::Composer::queue`), and this process's sender is
//! woken once it commits. No HTTP here (`api::recovery`), no SQL
//! (`store::email_tokens`, `store::outbox`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::admin;
use crate::auth::{Auth, validate_email};
use crate::error::{Error, Result};
use crate::mail::{Composer, Kind, Link, Locale};
use crate::passwords;
use crate::store::email_tokens::{self, Purpose};
use crate::store::failures;
use crate::store::history::{self, Outcome};
use crate::store::sessions::{self, ClientInfo};
use crate::store::users::{self, User};
use crate::tokens::Claims;

/// Accounts one password-reset request by address may reach.
const MAX_ACCOUNTS_PER_ADDRESS: i64 = 10;

/// A new mailed token: 256 random bits, base64url (43 characters), and
/// the SHA-256 that is stored.
pub fn new_token() -> Result<(String, Vec<u8>)> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::Internal("no randomness".into()))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// The stored hash of a presented token; None when it cannot be one of
/// ours (so it never reaches the database).
pub fn presented_hash(token: &str) -> Option<Vec<u8>> {
    let plausible = token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plausible.then(|| token_hash(token))
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Who a password-reset request names.
#[derive(Debug, Clone)]
pub enum ResetFor {
    Login(String),
    Email(String),
}

/// Password-reset requests pending after their 202 (queued or being looked
/// up): at most `email.max_pending_resets`, worked through **one at a
/// time** by one task. With a task per request, a flood naming an unknown
/// login (its lookup one query) had its tasks finish and be replaced far
/// faster than a flood naming a known account (a transaction each), so
/// the two kept the server differently busy: on one core the unknown
/// login's 202s came 3.9x slower (`scripts/bench.sh reset`), which told
/// the two apart. One worker does the work at one pace either way.
#[derive(Clone)]
pub struct ResetQueue {
    slots: Arc<tokio::sync::Semaphore>,
    jobs: tokio::sync::mpsc::UnboundedSender<ResetJob>,
    drops: Arc<DropLog>,
}

/// How often, at most, a flood's dropped requests are logged.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);

/// The warnings about dropped requests: one per [`DROP_WARN_EVERY`] at
/// most, each with the number dropped since the last. A warning per drop
/// let a flood of anonymous requests write as many log lines as it sent
/// (the counter `authgw_password_reset_dropped_total` counts every one).
#[derive(Default)]
struct DropLog {
    /// When the last warning went out, and the drops since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl DropLog {
    /// Counts a drop at `now`: `Some(n)` when a warning is due, for the
    /// `n` drops (this one included) since the last warning.
    fn drop_at(&self, now: std::time::Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, since) = &mut *state;
        *since += 1;
        match last {
            Some(at) if now.saturating_duration_since(*at) < DROP_WARN_EVERY => None,
            _ => {
                *last = Some(now);
                Some(std::mem::take(since))
            }
        }
    }
}

type ResetJob = (ResetFor, Option<Locale>, tokio::sync::OwnedSemaphorePermit);

impl ResetQueue {
    /// Starts the worker (inside the runtime). It ends when the last
    /// clone of the queue is dropped.
    pub fn start(auth: Arc<Auth>, bound: usize) -> Self {
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<ResetJob>();
        tokio::spawn(async move {
            while let Some((who, requested, slot)) = queue.recv().await {
                let auth = auth.clone();
                // A task of its own, awaited: a panic fails that request,
                // not the worker.
                let done = tokio::spawn(async move {
                    if let Err(e) = auth.request_password_reset(who, requested).await {
                        tracing::warn!(error = %e, "password-reset request not processed");
                    }
                })
                .await;
                if let Err(e) = done {
                    tracing::error!(error = %e, "password-reset request failed");
                }
                drop(slot);
            }
        });
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(bound)),
            jobs,
            drops: Arc::default(),
        }
    }

    /// Queues a request; false (the caller drops it) when the bound is
    /// reached. Drops are logged at most once per [`DROP_WARN_EVERY`].
    pub fn submit(&self, who: ResetFor, requested: Option<Locale>) -> bool {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            if let Some(dropped) = self.drops.drop_at(std::time::Instant::now()) {
                tracing::warn!(
                    dropped,
                    at_most_every = %humantime::format_duration(DROP_WARN_EVERY),
                    "password-reset requests dropped: email.max_pending_resets are pending"
                );
            }
            return false;
        };
        self.jobs.send((who, requested, slot)).is_ok()
    }
}

/// What `PATCH /users/me` may change.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    pub email: Option<String>,
    pub locale: Option<Locale>,
    /// The current password: required to change the address.
    pub password: Option<String>,
}

/// The language of `user`'s mail: theirs, else the request's.
pub(crate) fn locale_of(user: &User, requested: Option<Locale>) -> Locale {
    user.locale
        .as_deref()
        .and_then(Locale::parse)
        .or(requested)
        .unwrap_or_default()
}

/// The account behind an access token; one deleted since is a dead token.
fn caller(c: &mut impl postgres::GenericClient, user_id: Uuid) -> Result<User> {
    users::get(c, user_id)?.ok_or_else(|| Error::InvalidToken("user no longer exists".into()))
}

/// Queues a verification of `email` for `user` in `tx`: a new token
/// (older ones die) and the `verify_email` message.
pub(crate) fn queue_verification(
    mail: &Composer,
    tx: &mut impl postgres::GenericClient,
    user: &User,
    email: &str,
    locale: Locale,
) -> Result<()> {
    let (token, hash) = new_token()?;
    let ttl = mail.config.verify_ttl;
    email_tokens::issue(tx, user.id, Purpose::Verify, email, &hash, ttl)?;
    let link = mail.link(Link::Verify, &token);
    mail.queue(
        tx,
        Kind::VerifyEmail,
        locale,
        email,
        &[
            ("login", &user.login),
            ("link", &link),
            ("ttl", &locale.duration(ttl)),
            ("email", email),
        ],
    )?;
    Ok(())
}

/// Queues the "your password was changed" notice to `user`'s address.
pub(crate) fn queue_password_notice(
    mail: &Composer,
    tx: &mut impl postgres::GenericClient,
    user: &User,
) -> Result<()> {
    if let Some(email) = &user.email {
        mail.queue(
            tx,
            Kind::PasswordChanged,
            locale_of(user, None),
            email,
            &[("login", &user.login)],
        )?;
    }
    Ok(())
}

/// Queues a security notice of `kind` (a factor enabled or removed, a
/// provider linked) to `user`'s address, if it has one; `extra` fills the
/// kind's other placeholders.
pub(crate) fn queue_notice(
    mail: &Composer,
    tx: &mut impl postgres::GenericClient,
    user: &User,
    kind: Kind,
    extra: &[(&str, &str)],
) -> Result<()> {
    if let Some(email) = &user.email {
        let mut values: Vec<(&str, &str)> = vec![("login", &user.login)];
        values.extend_from_slice(extra);
        mail.queue(tx, kind, locale_of(user, None), email, &values)?;
    }
    Ok(())
}

impl Auth {
    /// The caller's account and the address waiting for confirmation.
    pub async fn me(&self, user_id: Uuid) -> Result<(User, Option<String>)> {
        self.db
            .run(move |c| {
                let user = caller(c, user_id)?;
                let pending = email_tokens::pending_email(c, user_id)?;
                Ok((user, pending))
            })
            .await
    }

    /// Follows a verification link: the address it names becomes the
    /// account's, verified. Outstanding reset links of a replaced address
    /// die with it.
    pub async fn verify_email(&self, token: &str) -> Result<String> {
        let hash = presented_hash(token).ok_or(Error::InvalidEmailToken)?;
        self.db
            .run(move |c| {
                let mut tx = c.transaction()?;
                let holder = email_tokens::consume(&mut tx, Purpose::Verify, &hash)?
                    .ok_or(Error::InvalidEmailToken)?;
                let before =
                    users::get(&mut tx, holder.user_id)?.ok_or(Error::InvalidEmailToken)?;
                users::set_verified_email(&mut tx, holder.user_id, &holder.email)?;
                if before.email.as_deref() != Some(holder.email.as_str()) {
                    email_tokens::revoke_all(&mut tx, holder.user_id, Purpose::Reset)?;
                }
                tx.commit()?;
                Ok(holder.email)
            })
            .await
    }

    /// Mails a new verification link: to the address waiting for
    /// confirmation, else to the account's unverified one. At most one per
    /// `email.resend_interval`.
    pub async fn resend_verification(
        &self,
        user_id: Uuid,
        requested: Option<Locale>,
    ) -> Result<String> {
        let interval = self.mail.config.resend_interval;
        let mail = self.mail.clone();
        let to = self
            .db
            .run(move |c| {
                let mut tx = c.transaction()?;
                sessions::lock_user(&mut tx, user_id)?;
                let user = caller(&mut tx, user_id)?;
                let pending = email_tokens::pending_email(&mut tx, user_id)?;
                let to = match (pending, &user.email) {
                    (Some(p), _) => p,
                    (None, Some(e)) if !user.email_verified => e.clone(),
                    (None, Some(_)) => {
                        return Err(Error::Conflict {
                            code: "email_already_verified",
                            detail: "the address is verified already".into(),
                        });
                    }
                    (None, None) => {
                        return Err(Error::Conflict {
                            code: "no_email",
                            detail:
                                "the account has no address; set one with PATCH /api/v1/users/me"
                                    .into(),
                        });
                    }
                };
                wait_between(&mut tx, user_id, Purpose::Verify, interval)?;
                queue_verification(&mail, &mut tx, &user, &to, locale_of(&user, requested))?;
                tx.commit()?;
                Ok(to)
            })
            .await?;
        self.mail.wake();
        Ok(to)
    }

    /// `PATCH /users/me`: the locale at once; a new address after the
    /// current password, pending until its link is followed (the old one
    /// stays in force and is told of the change). Returns the account and
    /// the address pending, as `GET /users/me` shows them.
    pub async fn update_profile(
        &self,
        claims: &Claims,
        change: ProfileChange,
        requested: Option<Locale>,
        info: &ClientInfo,
    ) -> Result<(User, Option<String>)> {
        let user_id = claims.sub;
        if let Some(email) = &change.email {
            validate_email(Some(email))?;
            let password = change
                .password
                .clone()
                .ok_or_else(|| Error::invalid("password", "required to change the email"))?;
            self.confirm_password(user_id, password, info).await?;
        }
        let mail = self.mail.clone();
        let queued = change.email.is_some();
        let user = self
            .db
            .run(move |c| {
                let mut tx = c.transaction()?;
                sessions::lock_user(&mut tx, user_id)?;
                if let Some(locale) = change.locale {
                    users::set_locale(&mut tx, user_id, locale.as_str())?;
                }
                let user = caller(&mut tx, user_id)?;
                if let Some(new) = change.email.as_deref() {
                    let same = user
                        .email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(new));
                    let locale = locale_of(&user, requested);
                    if !(same && user.email_verified) {
                        queue_verification(&mail, &mut tx, &user, new, locale)?;
                    } else {
                        // Back to the verified address: a pending change dies.
                        email_tokens::revoke_all(&mut tx, user_id, Purpose::Verify)?;
                    }
                    if let Some(old) = user.email.as_deref().filter(|_| !same) {
                        mail.queue(
                            &mut tx,
                            Kind::EmailChanged,
                            locale,
                            old,
                            &[("login", &user.login), ("email", old), ("new_email", new)],
                        )?;
                    }
                }
                let pending = email_tokens::pending_email(&mut tx, user_id)?;
                tx.commit()?;
                Ok((user, pending))
            })
            .await?;
        if queued {
            self.mail.wake();
        }
        Ok(user)
    }

    /// A reset link for the account(s) `who` names, mailed to their
    /// address. Called after the request was answered (202, the same for
    /// every input), so nothing here can tell anyone whether an account
    /// exists. At most one link per account per `email.resend_interval`.
    pub async fn request_password_reset(
        &self,
        who: ResetFor,
        requested: Option<Locale>,
    ) -> Result<()> {
        let interval = self.mail.config.resend_interval;
        let ttl = self.mail.config.reset_ttl;
        let mail = self.mail.clone();
        let queued = self
            .db
            .run(move |c| {
                let targets = match &who {
                    ResetFor::Login(login) => users::get_by_login(c, login)?.into_iter().collect(),
                    ResetFor::Email(email) => {
                        users::find_by_email(c, email, MAX_ACCOUNTS_PER_ADDRESS)?
                    }
                };
                let mut queued = 0;
                for target in targets {
                    let mut tx = c.transaction()?;
                    sessions::lock_user(&mut tx, target.id)?;
                    let Some(user) = users::get(&mut tx, target.id)? else {
                        continue;
                    };
                    let Some(email) = user.email.clone() else {
                        continue;
                    };
                    if wait_between(&mut tx, user.id, Purpose::Reset, interval).is_err() {
                        continue;
                    }
                    let (token, hash) = new_token()?;
                    email_tokens::issue(&mut tx, user.id, Purpose::Reset, &email, &hash, ttl)?;
                    let locale = locale_of(&user, requested);
                    let link = mail.link(Link::Reset, &token);
                    mail.queue(
                        &mut tx,
                        Kind::PasswordReset,
                        locale,
                        &email,
                        &[
                            ("login", &user.login),
                            ("link", &link),
                            ("ttl", &locale.duration(ttl)),
                        ],
                    )?;
                    tx.commit()?;
                    queued += 1;
                }
                Ok(queued)
            })
            .await?;
        if queued > 0 {
            self.mail.wake();
        }
        Ok(())
    }

    /// Follows a reset link: the new password (under the policy) replaces
    /// the old, every session of the user ends on every process, every
    /// reset link dies, the account's lockout is cleared, the address is
    /// verified (the link proved it), history records it and the address
    /// is told.
    pub async fn confirm_password_reset(
        &self,
        token: &str,
        new_password: String,
        info: &ClientInfo,
    ) -> Result<()> {
        let hash = presented_hash(token).ok_or(Error::InvalidResetToken)?;
        let peek_hash = hash.clone();
        let login = self
            .db
            .run(move |c| {
                let Some(holder) = email_tokens::peek(c, Purpose::Reset, &peek_hash)? else {
                    return Ok(None);
                };
                Ok(users::get(c, holder.user_id)?.map(|u| u.login))
            })
            .await?
            .ok_or(Error::InvalidResetToken)?;
        passwords::validate_new("new_password", &new_password, &login)?;
        let phc = self.hasher.hash(new_password).await?;
        let mail = self.mail.clone();
        let info = info.clone();
        self.revoking(move |c, lifetime| {
            let mut tx = c.transaction()?;
            let holder = email_tokens::peek(&mut tx, Purpose::Reset, &hash)?
                .ok_or(Error::InvalidResetToken)?;
            sessions::lock_user(&mut tx, holder.user_id)?;
            // Under the lock: a racing confirm of the same link finds it used.
            let holder = email_tokens::consume(&mut tx, Purpose::Reset, &hash)?
                .ok_or(Error::InvalidResetToken)?;
            let user = users::get(&mut tx, holder.user_id)?.ok_or(Error::InvalidResetToken)?;
            users::set_password(&mut tx, user.id, &phc)?;
            if user.email.as_deref() == Some(holder.email.as_str()) && !user.email_verified {
                users::set_verified_email(&mut tx, user.id, &holder.email)?;
            }
            let revoked =
                admin::end_user_sessions(&mut tx, user.id, None, "password reset", lifetime)?;
            failures::clear_account(&mut tx, &user.login)?;
            history::record(
                &mut tx,
                Some(user.id),
                &user.login,
                &info,
                Outcome::PasswordReset,
            )?;
            queue_password_notice(&mail, &mut tx, &user)?;
            tx.commit()?;
            Ok(revoked)
        })
        .await?;
        self.mail.wake();
        Ok(())
    }
}

/// Refuses (429) a second message of `purpose` to the user within
/// `interval` of the last.
fn wait_between(
    tx: &mut impl postgres::GenericClient,
    user_id: Uuid,
    purpose: Purpose,
    interval: Duration,
) -> Result<()> {
    let Some(elapsed) = email_tokens::since_last_issued(tx, user_id, purpose)? else {
        return Ok(());
    };
    if elapsed < interval {
        return Err(Error::RateLimited {
            retry_after: (interval - elapsed).max(Duration::from_secs(1)),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A flood of dropped resets logs one warning per 10 s, each with the
    /// drops since the last, not a line per drop.
    #[test]
    fn dropped_resets_are_logged_at_most_once_per_interval() {
        let log = DropLog::default();
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(log.drop_at(at(0)), Some(1), "the first drop is told");
        for ms in [1, 500, 9_999] {
            assert_eq!(
                log.drop_at(at(ms)),
                None,
                "a drop at {ms} ms is only counted"
            );
        }
        assert_eq!(
            log.drop_at(at(10_000)),
            Some(4),
            "the next warning counts them all"
        );
        assert_eq!(log.drop_at(at(10_001)), None);
        assert_eq!(log.drop_at(at(25_000)), Some(2));
    }

    /// Tokens are 43 base64url characters (256 bits) and distinct; the
    /// stored hash is what a presented token hashes to; anything else is
    /// refused before the database.
    #[test]
    fn tokens_are_256_bits_and_only_their_hash_is_kept() {
        let (a, ha) = new_token().unwrap();
        let (b, _) = new_token().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(presented_hash(&a), Some(ha.clone()));
        assert_eq!(ha.len(), 32);
        for bad in [
            "",
            "short",
            &format!("{a}="),
            &a[..42],
            &format!("{}+", &a[..42]),
            &a.replace(&a[..1], "%"),
        ] {
            assert_eq!(presented_hash(bad), None, "{bad:?}");
        }
    }
}
