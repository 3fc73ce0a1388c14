//! The Auth API's use cases: signup, login, refresh, logout, profile,
//! password change, self-deletion, history and sessions. No HTTP here: the
//! `api` module turns requests into these calls and errors into problems.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::admin;
use crate::client_key::client_key_of;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::mail::Locale;
use crate::passwords::{self, Hasher};
use crate::revocation::RevocationSet;
use crate::store::failures::{self, Claim};
use crate::store::history::{self, LoginEvent, Outcome};
use crate::store::mfa;
use crate::store::revocations::{self, Kind, Revocation};
use crate::store::sessions::{self, ClientInfo, Consumed, Origin, SessionInfo, Start, Successor};
use crate::store::users::{self, User};
use crate::store::{Db, Page};
use crate::tokens::{self, Claims, RefreshToken, Tokens};

/// A freshly issued access/refresh token pair.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

/// What a right password leads to: tokens, or (for a user with a second
/// factor) a challenge for `POST /auth/login/mfa`.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    Tokens(TokenPair),
    SecondFactor(crate::mfa::Challenge),
}

/// Shared state of the Auth API.
pub struct Auth {
    pub config: Arc<Config>,
    pub db: Db,
    pub hasher: Hasher,
    pub tokens: Tokens,
    pub revocations: Arc<RevocationSet>,
    /// Account mail: templates and the outbox ([`crate::mail::Composer`]).
    pub mail: Arc<crate::mail::Composer>,
}

/// Checks a login's shape: 3-64 characters of `[A-Za-z0-9._-]`.
pub fn validate_login(login: &str) -> Result<()> {
    let ok = (3..=64).contains(&login.len())
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "login",
            "must be 3-64 characters of letters, digits, '.', '_' or '-'",
        ))
    }
}

/// An address mail can be sent to (RFC 5321 shape, at most 254 bytes).
pub fn validate_email(email: Option<&str>) -> Result<()> {
    match email {
        Some(e) if e.len() > 254 || !crate::mail::is_deliverable(e) => {
            Err(Error::invalid("email", "must be an e-mail address"))
        }
        _ => Ok(()),
    }
}

/// What a failure claim ([`failures::claim`]) lets through: 429 while the
/// (account, client) pair is locked; else the check, after the account's
/// slow-down if it is past its threshold.
pub(crate) async fn admit(claim: Claim) -> Result<()> {
    match claim {
        Claim::Locked { retry_after } => Err(Error::TooManyAttempts { retry_after }),
        Claim::Allowed { delay } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(())
        }
    }
}

impl Auth {
    /// How long a revocation must be remembered: the longest an access token
    /// issued before it can still verify.
    pub fn revocation_lifetime(&self) -> Duration {
        self.config.tokens.access_ttl + self.config.tokens.clock_skew
    }

    /// Runs a database action that revokes tokens, then applies its
    /// revocations to this process's set at once (other processes get them
    /// through NOTIFY).
    pub async fn revoking<F>(&self, action: F) -> Result<()>
    where
        F: FnOnce(&mut postgres::Client, Duration) -> Result<Vec<Revocation>> + Send + 'static,
    {
        let lifetime = self.revocation_lifetime();
        let revoked = self.db.run(move |c| action(c, lifetime)).await?;
        self.revocations.insert(&revoked);
        Ok(())
    }

    /// Verifies a bearer token: signature and claims, then the in-memory
    /// revocation set. Never touches the database.
    pub fn authenticate(&self, token: &str) -> Result<Claims> {
        self.authenticate_shared(token).map(|c| (*c).clone())
    }

    /// [`Auth::authenticate`] for the proxy's hot path: no copy of the claims.
    /// Signature (or the verified-token cache), claims, then the revocation
    /// set; never the database.
    pub fn authenticate_shared(&self, token: &str) -> Result<Arc<Claims>> {
        let claims = self.tokens.verify_cached(token)?;
        if self.revocations.is_revoked(claims.sub, claims.sid) {
            return Err(Error::InvalidToken("token revoked".into()));
        }
        Ok(claims)
    }

    /// Creates an ordinary user. With an email, a verification link is
    /// queued in the same transaction, in `locale`.
    pub async fn signup(
        &self,
        login: String,
        password: String,
        email: Option<String>,
        locale: Option<Locale>,
    ) -> Result<User> {
        validate_login(&login)?;
        passwords::validate_new("password", &password, &login)?;
        validate_email(email.as_deref())?;
        if email.is_none() && self.config.auth.require_verified_email {
            return Err(Error::invalid(
                "email",
                "required: logins need a verified address (auth.require_verified_email)",
            ));
        }
        let hash = self.hasher.hash(password).await?;
        let mail = self.mail.clone();
        let user = self
            .db
            .run(move |c| {
                let mut tx = c.transaction()?;
                let user = users::create(
                    &mut tx,
                    users::NewUser {
                        login: &login,
                        email: email.as_deref(),
                        email_verified: false,
                        locale: locale.map(Locale::as_str),
                        password_hash: Some(&hash),
                        is_admin: false,
                    },
                )?;
                if let Some(email) = &email {
                    crate::recovery::queue_verification(
                        &mail,
                        &mut tx,
                        &user,
                        email,
                        locale.unwrap_or_default(),
                    )?;
                }
                tx.commit()?;
                Ok(user)
            })
            .await?;
        if user.email.is_some() {
            self.mail.wake();
        }
        Ok(user)
    }

    /// Checks a password. For a user with a TOTP factor, answers a
    /// challenge instead of tokens: the password's failure claim is taken
    /// back, but earlier failures stay counted until the second step
    /// succeeds (`Auth::login_mfa`).
    pub async fn login(
        &self,
        login: String,
        password: String,
        info: ClientInfo,
    ) -> Result<LoginOutcome> {
        if login.is_empty() || login.len() > 64 {
            return Err(Error::InvalidCredentials);
        }
        if password.len() > passwords::MAX_LEN {
            return Err(Error::invalid(
                "password",
                format!("must be at most {} bytes", passwords::MAX_LEN),
            ));
        }
        let lookup = login.clone();
        let creds = self
            .db
            .run(move |c| users::find_credentials(c, &lookup))
            .await?;
        let user_id = creds.as_ref().map(|c| c.id);
        let client = client_key_of(info.ip);
        // An unknown login is verified against the dummy hash and counted
        // like a known one, so neither the time nor a lock tells them apart.
        let phc = creds.as_ref().and_then(|c| c.password_hash.clone());
        let ok = match self.guarded_verify(&login, client, password, phc).await {
            Err(Error::TooManyAttempts { retry_after }) => {
                let (login, info) = (login.clone(), info.clone());
                self.db
                    .run(move |c| history::record(c, user_id, &login, &info, Outcome::Locked))
                    .await?;
                return Err(Error::TooManyAttempts { retry_after });
            }
            other => other?,
        };
        let creds = match creds {
            Some(creds) if ok => creds,
            creds => {
                let outcome = match creds {
                    None => Outcome::UnknownLogin,
                    Some(_) => Outcome::BadPassword,
                };
                self.db
                    .run(move |c| history::record(c, user_id, &login, &info, outcome))
                    .await?;
                return Err(Error::InvalidCredentials);
            }
        };
        let lifetime = self.session_lifetime();
        let (refresh_token, hash) = tokens::new_refresh_token();
        let session_id = Uuid::new_v4();
        let require_verified = self.config.auth.require_verified_email;
        let (challenge, challenge_hash) = crate::recovery::new_token()?;
        let challenge_ttl = self.config.mfa.challenge_ttl;
        let limits = self.config.limits.clone();
        enum Passed {
            Session(Box<users::User>, Origin),
            SecondFactor { recovery_codes: bool },
        }
        let passed = self
            .db
            .run(move |c| {
                let mut tx = c.transaction()?;
                // The password was verified outside any lock; a password
                // change (or deletion) that committed meanwhile must win:
                // under the user's lock, the hash must still be the one
                // verified, or the new session would outlive the change.
                sessions::lock_user(&mut tx, creds.id)?;
                let current = users::password_hash(&mut tx, creds.id)?;
                if current.and_then(|(phc, _, _)| phc) != creds.password_hash {
                    return Err(Error::InvalidCredentials);
                }
                let user = users::get(&mut tx, creds.id)?.ok_or(Error::InvalidCredentials)?;
                if require_verified && !user.is_admin && !user.email_verified {
                    failures::clear(&mut tx, &login, client)?;
                    history::record(
                        &mut tx,
                        Some(creds.id),
                        &creds.login,
                        &info,
                        Outcome::EmailNotVerified,
                    )?;
                    tx.commit()?;
                    return Err(Error::EmailNotVerified);
                }
                if user.mfa_enabled {
                    failures::release(&mut tx, &login, client, &limits)?;
                    // The stored spelling: failures are keyed by the
                    // lower-case login, which is the same either way.
                    let recovery_codes = crate::mfa::open_challenge(
                        &mut tx,
                        &challenge_hash,
                        creds.id,
                        &creds.login,
                        &info,
                        challenge_ttl,
                        mfa::FirstStep {
                            amr: &[crate::mfa::AMR_PASSWORD.to_string()],
                            provider: None,
                        },
                    )?;
                    tx.commit()?;
                    return Ok(Passed::SecondFactor { recovery_codes });
                }
                failures::clear(&mut tx, &login, client)?;
                let amr = [crate::mfa::AMR_PASSWORD.to_string()];
                let origin = sessions::issue(
                    &mut tx,
                    creds.id,
                    session_id,
                    &hash,
                    lifetime,
                    Start::New { amr: &amr },
                    &info,
                )?;
                history::record_success(&mut tx, creds.id, &creds.login, &info, &amr, None)?;
                tx.commit()?;
                Ok(Passed::Session(Box::new(user), origin))
            })
            .await?;
        match passed {
            Passed::Session(user, origin) => self
                .pair(&user, session_id, refresh_token, &origin)
                .map(LoginOutcome::Tokens),
            Passed::SecondFactor { recovery_codes } => Ok(LoginOutcome::SecondFactor(
                crate::mfa::Challenge::new(challenge, recovery_codes, challenge_ttl),
            )),
        }
    }

    /// Verifies `password` for `login` from `client` under the failure
    /// limits (see [`failures`]): the attempt is claimed first, so a locked
    /// (account, client) pair gets `TooManyAttempts` with nothing verified;
    /// an account past its account-wide threshold waits `account_delay`
    /// first; then argon2 runs (against the dummy hash when `phc` is None).
    /// The counts stay charged: the caller clears them on success.
    async fn guarded_verify(
        &self,
        login: &str,
        client: IpAddr,
        password: String,
        phc: Option<String>,
    ) -> Result<bool> {
        let limits = self.config.limits.clone();
        let key = login.to_string();
        let claim = self
            .db
            .run(move |c| failures::claim(c, &key, client, &limits))
            .await?;
        admit(claim).await?;
        self.hasher.verify(password, phc).await
    }

    /// A refresh token's lifetime and its session's absolute one.
    pub(crate) fn session_lifetime(&self) -> sessions::Lifetime {
        sessions::Lifetime {
            ttl: self.config.tokens.refresh_ttl,
            max_age: self.config.tokens.session_max_age,
        }
    }

    /// The token pair of `user`'s session `session_id`, which started with
    /// `origin` (its `amr` and `auth_time`).
    pub(crate) fn pair(
        &self,
        user: &User,
        session_id: Uuid,
        refresh_token: String,
        origin: &Origin,
    ) -> Result<TokenPair> {
        let access_token = self.tokens.issue(&tokens::Grant {
            sub: user.id,
            login: &user.login,
            roles: &user.roles,
            adm: user.is_admin,
            sid: session_id,
            email_verified: user.email_verified,
            amr: &origin.amr,
            auth_time: origin.started_at.timestamp(),
        })?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            expires_in: self.tokens.access_ttl().as_secs(),
        })
    }

    /// Consumes `presented` and issues the next token of its session, with the
    /// user's current roles read again from the database. Runs under the
    /// user's lock ([`sessions::lock_user`]), like every revocation, so a
    /// revocation either sees the new token or makes the refresh fail.
    ///
    /// The next token is derived from `presented` under the newest server
    /// secret ([`RefreshToken::successor`]). The same token presented again
    /// within `tokens.refresh_reuse_grace` (a racing tab, a retry after a lost
    /// answer) gets the same successor, recomputed, with a fresh access token
    /// and no second rotation; unless the successor was rotated further
    /// (409). After the grace, a second use is theft: the session dies.
    pub async fn refresh(&self, presented: String, info: ClientInfo) -> Result<TokenPair> {
        let presented = RefreshToken::parse(&presented).ok_or(Error::InvalidRefreshToken)?;
        let grace = self.config.tokens.refresh_reuse_grace;
        let session = self.session_lifetime();
        let lifetime = self.revocation_lifetime();
        let ring = self.tokens.keyring();
        // What each secret of the ring derives, oldest first: the successor of
        // a token rotated just before a secret rotation is still recognised.
        // The last, the newest secret's, is the next token.
        let candidates: Vec<RefreshToken> = ring
            .secrets()
            .all()
            .iter()
            .map(|secret| presented.successor(secret))
            .collect();
        let next = candidates
            .last()
            .cloned()
            .ok_or_else(|| Error::Internal("no server secret".into()))?;
        let hashes: Vec<Vec<u8>> = candidates.iter().map(|c| c.hash.clone()).collect();
        enum Step {
            Issued(Box<User>, Uuid, Origin, Option<usize>),
            Reused(Vec<Revocation>),
            Refused(Error),
        }
        let next_hash = next.hash.clone();
        let step = self
            .db
            .run(move |c| {
                let mut tx = c.transaction()?;
                let Some(owner) = sessions::token_owner(&mut tx, &presented.hash)? else {
                    return Ok(Step::Refused(Error::InvalidRefreshToken));
                };
                sessions::lock_user(&mut tx, owner)?;
                let step =
                    match sessions::consume(&mut tx, &presented.hash, grace, session.max_age)? {
                        Consumed::Rotated {
                            user_id,
                            session_id,
                            origin,
                        } => {
                            let origin = sessions::issue(
                                &mut tx,
                                user_id,
                                session_id,
                                &next_hash,
                                session,
                                Start::Continue(&origin),
                                &info,
                            )?;
                            match users::get(&mut tx, user_id)? {
                                Some(user) => {
                                    Step::Issued(Box::new(user), session_id, origin, None)
                                }
                                None => Step::Refused(Error::InvalidRefreshToken),
                            }
                        }
                        Consumed::Reused { session_id, .. } => {
                            sessions::revoke_session(&mut tx, session_id)?;
                            Step::Reused(revocations::revoke(
                                &mut tx,
                                Kind::Session,
                                &[session_id],
                                "refresh token reuse",
                                lifetime,
                            )?)
                        }
                        Consumed::AlreadyRotated { session_id } => {
                            match sessions::successor(&mut tx, session_id, &hashes)? {
                                Successor::Live {
                                    index,
                                    user_id,
                                    origin,
                                } => match users::get(&mut tx, user_id)? {
                                    Some(user) => Step::Issued(
                                        Box::new(user),
                                        session_id,
                                        origin,
                                        Some(index),
                                    ),
                                    None => Step::Refused(Error::InvalidRefreshToken),
                                },
                                Successor::Gone => Step::Refused(Error::RefreshTokenAlreadyRotated),
                                Successor::Dead => Step::Refused(Error::InvalidRefreshToken),
                            }
                        }
                        Consumed::Invalid => Step::Refused(Error::InvalidRefreshToken),
                    };
                tx.commit()?;
                Ok(step)
            })
            .await?;
        match step {
            Step::Issued(user, session_id, origin, None) => {
                self.pair(&user, session_id, next.token, &origin)
            }
            Step::Issued(user, session_id, origin, Some(index)) => {
                tracing::info!(%session_id, "refresh token presented again within the grace; same successor");
                let again = candidates
                    .into_iter()
                    .nth(index)
                    .ok_or_else(|| Error::Internal("successor index out of range".into()))?;
                self.pair(&user, session_id, again.token, &origin)
            }
            Step::Reused(revoked) => {
                tracing::warn!("refresh token reuse detected; session revoked");
                self.revocations.insert(&revoked);
                Err(Error::RefreshTokenReused)
            }
            Step::Refused(e) => Err(e),
        }
    }

    /// Ends the session of `claims`: its refresh tokens and its access tokens.
    pub async fn logout(&self, claims: &Claims) -> Result<()> {
        self.logout_session(claims.sub, claims.sid).await
    }

    /// Ends session `sid` of `user_id` (logout by the refresh cookie).
    pub async fn logout_session(&self, user_id: Uuid, sid: Uuid) -> Result<()> {
        self.end_session_of(sid, user_id, "logout", false).await
    }

    /// The (user, session) of a refresh token that could still refresh
    /// ([`sessions::live_session_of_token`]), for a logout that shows the
    /// refresh cookie instead of an access token; else 401
    /// `invalid_refresh_token`.
    pub async fn session_of_refresh(&self, presented: &str) -> Result<(Uuid, Uuid)> {
        let presented = RefreshToken::parse(presented).ok_or(Error::InvalidRefreshToken)?;
        let grace = self.config.tokens.refresh_reuse_grace;
        self.db
            .run(move |c| sessions::live_session_of_token(c, &presented.hash, grace))
            .await?
            .ok_or(Error::InvalidRefreshToken)
    }

    /// Ends every session of `user_id`. `current` is included even if the
    /// database knows no refresh token for it.
    pub async fn logout_all(
        &self,
        user_id: Uuid,
        current: Uuid,
        reason: &'static str,
    ) -> Result<()> {
        self.revoking(move |c, lifetime| {
            let mut tx = c.transaction()?;
            sessions::lock_user(&mut tx, user_id)?;
            let mut revoked = admin::end_user_sessions(&mut tx, user_id, None, reason, lifetime)?;
            if !revoked.iter().any(|r| r.subject == current) {
                revoked.extend(revocations::revoke(
                    &mut tx,
                    Kind::Session,
                    &[current],
                    reason,
                    lifetime,
                )?);
            }
            tx.commit()?;
            Ok(revoked)
        })
        .await
    }

    /// Ends one session of `user_id`; someone else's session is "not found".
    pub async fn end_session(&self, user_id: Uuid, session_id: Uuid) -> Result<()> {
        self.end_session_of(session_id, user_id, "session ended", true)
            .await
    }

    /// Revokes session `sid` of `user_id`. A session of another user is "not
    /// found"; so is an unknown one when `must_exist`.
    async fn end_session_of(
        &self,
        sid: Uuid,
        user_id: Uuid,
        reason: &'static str,
        must_exist: bool,
    ) -> Result<()> {
        self.revoking(move |c, lifetime| {
            let mut tx = c.transaction()?;
            sessions::lock_user(&mut tx, user_id)?;
            let owner = sessions::owner(&mut tx, sid)?;
            if owner.is_some_and(|o| o != user_id) || (must_exist && owner.is_none()) {
                return Err(Error::NotFound {
                    what: "session",
                    name: sid.to_string(),
                });
            }
            sessions::revoke_session(&mut tx, sid)?;
            let revoked = revocations::revoke(&mut tx, Kind::Session, &[sid], reason, lifetime)?;
            tx.commit()?;
            Ok(revoked)
        })
        .await
    }

    /// Checks `password` against the stored hash of `user_id`, counted and
    /// locked per (account, client) like a login, so a stolen access token
    /// is no better a password oracle than the login form. Returns whether
    /// the user is an administrator.
    pub(crate) async fn confirm_password(
        &self,
        user_id: Uuid,
        password: String,
        info: &ClientInfo,
    ) -> Result<bool> {
        if password.len() > passwords::MAX_LEN {
            return Err(Error::InvalidCredentials);
        }
        let stored = self
            .db
            .run(move |c| users::password_hash(c, user_id))
            .await?;
        let Some((phc, is_admin, login)) = stored else {
            return Err(Error::InvalidToken("user no longer exists".into()));
        };
        let client = client_key_of(info.ip);
        if !self.guarded_verify(&login, client, password, phc).await? {
            return Err(Error::InvalidCredentials);
        }
        self.db
            .run(move |c| failures::clear(c, &login, client))
            .await?;
        Ok(is_admin)
    }

    /// Changes the password and ends every other session of the user.
    pub async fn change_password(
        &self,
        claims: &Claims,
        old: String,
        new: String,
        info: &ClientInfo,
    ) -> Result<()> {
        passwords::validate_new("new_password", &new, &claims.login)?;
        self.confirm_password(claims.sub, old, info).await?;
        let hash = self.hasher.hash(new).await?;
        let (user_id, keep) = (claims.sub, claims.sid);
        let mail = self.mail.clone();
        self.revoking(move |c, lifetime| {
            let mut tx = c.transaction()?;
            sessions::lock_user(&mut tx, user_id)?;
            users::set_password(&mut tx, user_id, &hash)?;
            if let Some(user) = users::get(&mut tx, user_id)? {
                crate::recovery::queue_password_notice(&mail, &mut tx, &user)?;
            }
            let revoked = admin::end_user_sessions(
                &mut tx,
                user_id,
                Some(keep),
                "password changed",
                lifetime,
            )?;
            tx.commit()?;
            Ok(revoked)
        })
        .await?;
        self.mail.wake();
        Ok(())
    }

    /// Deletes the caller's account after checking its password. An
    /// administrator cannot delete itself this way.
    pub async fn delete_self(
        &self,
        claims: &Claims,
        password: String,
        info: &ClientInfo,
    ) -> Result<()> {
        if self.confirm_password(claims.sub, password, info).await? {
            return Err(Error::Forbidden(
                "an administrator cannot delete itself through the API".into(),
            ));
        }
        let user_id = claims.sub;
        self.revoking(move |c, lifetime| {
            admin::delete_user_tx(c, user_id, "account deleted", lifetime)
        })
        .await
    }

    pub async fn history(
        &self,
        user_id: Uuid,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<LoginEvent>> {
        self.db
            .run(move |c| history::page(c, user_id, cursor.as_deref(), limit))
            .await
    }

    pub async fn sessions(&self, user_id: Uuid) -> Result<Vec<SessionInfo>> {
        self.db.run(move |c| sessions::active(c, user_id)).await
    }
}
