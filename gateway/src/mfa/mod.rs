//! Second factors (docs/mfa.md): TOTP (RFC 6238) with single-use recovery
//! codes, the two-step login, and how a session authenticated (RFC 8176
//! `amr`). No HTTP here (`api::mfa`), no SQL (`store::mfa`).
//!
//! Every check of a code a user types behind a session (regenerating the
//! recovery codes, disabling the factor) and every second step of a login
//! is counted by the password failure counters (`store::failures`), so a
//! stolen password or access token is no better a code oracle than the
//! login form.

pub mod codes;
pub mod qr;
pub mod seal;
pub mod totp;

use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::auth::{Auth, TokenPair};
use crate::client_key::client_key_of;
use crate::error::{Error, Result};
use crate::mail::Kind;
use crate::recovery::queue_notice;
use crate::secrets::SecretRing;
use crate::store::failures::{self, Claim};
use crate::store::history::{self, Outcome};
use crate::store::mfa;
use crate::store::sessions::{self, ClientInfo, Start};
use crate::store::users;
use crate::tokens::{self, Claims};

/// `amr` of a password (RFC 8176).
pub const AMR_PASSWORD: &str = "pwd";
/// `amr` of a TOTP code (RFC 8176 `otp`).
pub const AMR_OTP: &str = "otp";
/// `amr` of a recovery code.
pub const AMR_RECOVERY_CODE: &str = "rcode";

/// What an authenticator app needs: the secret, the URI, the QR code.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The secret in base32 (RFC 4648, no padding), for typing in by hand.
    pub secret: String,
    pub otpauth_uri: String,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

/// A second factor as presented.
#[derive(Clone)]
pub enum Proof {
    Totp(String),
    RecoveryCode(String),
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proof::Totp(_) => "Proof::Totp(..)",
            Proof::RecoveryCode(_) => "Proof::RecoveryCode(..)",
        })
    }
}

impl Proof {
    /// The metric's and the API's name of the method.
    pub fn method(&self) -> &'static str {
        match self {
            Proof::Totp(_) => "totp",
            Proof::RecoveryCode(_) => "recovery_code",
        }
    }

    fn amr(&self) -> &'static str {
        match self {
            Proof::Totp(_) => AMR_OTP,
            Proof::RecoveryCode(_) => AMR_RECOVERY_CODE,
        }
    }
}

/// A login whose password was right, waiting for its second factor.
#[derive(Clone)]
pub struct Challenge {
    /// Single-use, for `POST /auth/login/mfa`; only its hash is stored.
    pub token: String,
    /// `totp`, and `recovery_code` while the user has unused codes.
    pub methods: Vec<&'static str>,
    pub expires_in: u64,
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}

impl Challenge {
    /// The challenge `token` of a first step, answered with the methods the
    /// user has left.
    pub fn new(token: String, recovery_codes: bool, ttl: std::time::Duration) -> Self {
        let mut methods = vec!["totp"];
        if recovery_codes {
            methods.push("recovery_code");
        }
        Self {
            token,
            methods,
            expires_in: ttl.as_secs(),
        }
    }
}

/// In `tx` (under the user's lock): a first step that succeeded for a user
/// with a factor opens the challenge whose hash is `token_hash` and records
/// `mfa_required` in the history. Whether unused recovery codes remain.
pub(crate) fn open_challenge(
    tx: &mut impl postgres::GenericClient,
    token_hash: &[u8],
    user_id: Uuid,
    login: &str,
    info: &ClientInfo,
    ttl: std::time::Duration,
    first: mfa::FirstStep<'_>,
) -> Result<bool> {
    mfa::create_challenge(tx, token_hash, user_id, login, info, ttl, first)?;
    history::record(tx, Some(user_id), login, info, Outcome::MfaRequired)?;
    Ok(mfa::recovery_codes_left(tx, user_id)? > 0)
}

/// The caller's factor as `GET /users/me/mfa` shows it.
#[derive(Debug, Clone)]
pub struct Status {
    pub enabled: bool,
    /// An enrolment waits for its first code.
    pub pending: bool,
    pub recovery_codes_left: i64,
}

fn now_step() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    totp::step_at(secs)
}

/// Checks `proof` for `user_id` inside a transaction that holds the user's
/// lock: a TOTP code against the confirmed factor (its step is recorded:
/// never accepted twice), or an unused recovery code (used up). A factor
/// sealed under an older server secret is sealed again under the newest.
/// `Ok(false)` for a wrong, malformed or replayed code.
fn check_proof(
    tx: &mut impl postgres::GenericClient,
    ring: &SecretRing,
    user_id: Uuid,
    proof: &Proof,
) -> Result<bool> {
    match proof {
        Proof::Totp(code) => {
            let Some(factor) = mfa::factor(tx, user_id)?.filter(|f| f.confirmed) else {
                return Ok(false);
            };
            let secret = seal::open(ring, user_id, &factor.sealed)?;
            let Some(step) = totp::verify(&secret, code, now_step(), factor.last_step) else {
                return Ok(false);
            };
            if !mfa::accept_step(tx, user_id, step)? {
                return Ok(false);
            }
            if factor.sealed.key_id != ring.current().kid() {
                mfa::reseal(tx, user_id, &seal::seal(ring, user_id, &secret)?)?;
            }
            Ok(true)
        }
        Proof::RecoveryCode(code) => match codes::presented_hash(code) {
            Some(hash) => mfa::use_recovery_code(tx, user_id, &hash),
            None => Ok(false),
        },
    }
}

/// A new set of recovery codes: shown, and their hashes.
fn new_codes() -> Result<(Vec<String>, Vec<Vec<u8>>)> {
    Ok(codes::generate()?.into_iter().unzip())
}

impl Auth {
    /// The caller's factor.
    pub async fn mfa_status(&self, user_id: Uuid) -> Result<Status> {
        self.db
            .run(move |c| {
                let factor = mfa::factor(c, user_id)?;
                Ok(Status {
                    enabled: factor.as_ref().is_some_and(|f| f.confirmed),
                    pending: factor.as_ref().is_some_and(|f| !f.confirmed),
                    recovery_codes_left: mfa::recovery_codes_left(c, user_id)?,
                })
            })
            .await
    }

    /// Starts an enrolment after checking the caller's password (counted
    /// like a login's): a new secret, sealed and stored as pending
    /// (replacing an earlier pending one). 409 `mfa_already_enabled` when a
    /// factor is confirmed.
    pub async fn mfa_enrol(
        &self,
        claims: &Claims,
        password: String,
        info: &ClientInfo,
    ) -> Result<Enrolment> {
        self.confirm_password(claims.sub, password, info).await?;
        let mut secret = [0u8; totp::SECRET_LEN];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| Error::Internal("no randomness".into()))?;
        let ring = self.tokens.keyring();
        let sealed = seal::seal(ring.secrets(), claims.sub, &secret)?;
        let user_id = claims.sub;
        self.db
            .run(move |c| {
                let mut tx = c.transaction()?;
                sessions::lock_user(&mut tx, user_id)?;
                mfa::start(&mut tx, user_id, &sealed)?;
                tx.commit()?;
                Ok(())
            })
            .await?;
        let encoded = data_encoding::BASE32_NOPAD.encode(&secret);
        let uri = totp::otpauth_uri(&self.config.mfa.issuer, &claims.login, &encoded);
        Ok(Enrolment {
            qr_svg: qr::svg(&uri)?,
            secret: encoded,
            otpauth_uri: uri,
        })
    }

    /// Confirms the pending enrolment with a first code from the app and
    /// returns the recovery codes, shown this once.
    pub async fn mfa_confirm(&self, claims: &Claims, code: String) -> Result<Vec<String>> {
        let (shown, hashes) = new_codes()?;
        let ring = self.tokens.keyring();
        let user_id = claims.sub;
        let mail = self.mail.clone();
        self.db
            .run(move |c| {
                let mut tx = c.transaction()?;
                sessions::lock_user(&mut tx, user_id)?;
                let factor = mfa::factor(&mut tx, user_id)?.ok_or_else(|| Error::Conflict {
                    code: "mfa_not_pending",
                    detail:
                        "no enrolment to confirm: start one with POST /api/v1/users/me/mfa/totp"
                            .into(),
                })?;
                if factor.confirmed {
                    return Err(mfa::already_enabled());
                }
                let secret = seal::open(ring.secrets(), user_id, &factor.sealed)?;
                let step =
                    totp::verify(&secret, &code, now_step(), None).ok_or(Error::InvalidMfaCode)?;
                mfa::confirm(&mut tx, user_id, step)?;
                mfa::replace_recovery_codes(&mut tx, user_id, &hashes)?;
                if let Some(user) = users::get(&mut tx, user_id)? {
                    queue_notice(&mail, &mut tx, &user, Kind::MfaEnabled, &[])?;
                }
                tx.commit()?;
                Ok(())
            })
            .await?;
        self.mail.wake();
        Ok(shown)
    }

    /// Claims one code check of the caller's account from `info`'s client,
    /// as a password check is claimed: 429 while the pair is locked; 409
    /// `mfa_not_enabled`, claiming nothing, when there is no factor.
    async fn claim_code_check(&self, claims: &Claims, info: &ClientInfo) -> Result<()> {
        let limits = self.config.limits.clone();
        let (user_id, key, client) = (claims.sub, claims.login.clone(), client_key_of(info.ip));
        let claim = self
            .db
            .run(move |c| {
                if !mfa::enabled(c, user_id)? {
                    return Err(not_enabled());
                }
                failures::claim(c, &key, client, &limits)
            })
            .await?;
        crate::auth::admit(claim).await
    }

    /// New recovery codes for a current TOTP code; the old ones die.
    pub async fn mfa_regenerate(
        &self,
        claims: &Claims,
        code: String,
        info: &ClientInfo,
    ) -> Result<Vec<String>> {
        self.claim_code_check(claims, info).await?;
        let (shown, hashes) = new_codes()?;
        let ring = self.tokens.keyring();
        let (user_id, login, client) = (claims.sub, claims.login.clone(), client_key_of(info.ip));
        let accepted = self
            .db
            .run(move |c| {
                let mut tx = c.transaction()?;
                sessions::lock_user(&mut tx, user_id)?;
                if !mfa::enabled(&mut tx, user_id)? {
                    return Err(not_enabled());
                }
                let ok = check_proof(&mut tx, ring.secrets(), user_id, &Proof::Totp(code))?;
                if ok {
                    mfa::replace_recovery_codes(&mut tx, user_id, &hashes)?;
                    failures::clear(&mut tx, &login, client)?;
                }
                tx.commit()?;
                Ok(ok)
            })
            .await?;
        if accepted {
            Ok(shown)
        } else {
            Err(Error::InvalidMfaCode)
        }
    }

    /// Disables the caller's factor with its password and a code (TOTP or
    /// recovery), and ends every other session of the user.
    pub async fn mfa_disable(
        &self,
        claims: &Claims,
        password: String,
        proof: Proof,
        info: &ClientInfo,
    ) -> Result<()> {
        self.confirm_password(claims.sub, password, info).await?;
        self.claim_code_check(claims, info).await?;
        let ring = self.tokens.keyring();
        let (user_id, keep) = (claims.sub, claims.sid);
        let (login, client) = (claims.login.clone(), client_key_of(info.ip));
        let mail = self.mail.clone();
        self.revoking(move |c, lifetime| {
            let mut tx = c.transaction()?;
            sessions::lock_user(&mut tx, user_id)?;
            if !mfa::enabled(&mut tx, user_id)? {
                return Err(not_enabled());
            }
            if !check_proof(&mut tx, ring.secrets(), user_id, &proof)? {
                // The failure stays counted.
                tx.commit()?;
                return Err(Error::InvalidMfaCode);
            }
            mfa::remove(&mut tx, user_id)?;
            failures::clear(&mut tx, &login, client)?;
            if let Some(user) = users::get(&mut tx, user_id)? {
                queue_notice(&mail, &mut tx, &user, Kind::MfaDisabled, &[])?;
            }
            let revoked = crate::admin::end_user_sessions(
                &mut tx,
                user_id,
                Some(keep),
                "second factor disabled",
                lifetime,
            )?;
            tx.commit()?;
            Ok(revoked)
        })
        .await?;
        self.mail.wake();
        Ok(())
    }

    /// The second step of a login: the challenge from the first, and a
    /// TOTP or recovery code. The challenge takes one attempt per call
    /// (`mfa.challenge_attempts`, then it dies), and each code is counted
    /// by the failure counters of the login's account and client.
    pub async fn login_mfa(
        &self,
        challenge: &str,
        proof: Proof,
        info: ClientInfo,
    ) -> Result<TokenPair> {
        let hash = crate::recovery::presented_hash(challenge).ok_or(Error::InvalidMfaChallenge)?;
        let max = self.config.mfa.challenge_attempts;
        let limits = self.config.limits.clone();
        let client = client_key_of(info.ip);
        let attempt_hash = hash.clone();
        let (challenge, claim) = self
            .db
            .run(move |c| {
                let mut tx = c.transaction()?;
                let challenge = mfa::attempt_challenge(&mut tx, &attempt_hash, max)?
                    .ok_or(Error::InvalidMfaChallenge)?;
                let claim = failures::claim(&mut tx, &challenge.login, client, &limits)?;
                tx.commit()?;
                Ok((challenge, claim))
            })
            .await?;
        if matches!(claim, Claim::Locked { .. }) {
            let (user_id, login, locked_info) =
                (challenge.user_id, challenge.login.clone(), info.clone());
            self.db
                .run(move |c| {
                    history::record(c, Some(user_id), &login, &locked_info, Outcome::Locked)
                })
                .await?;
        }
        crate::auth::admit(claim).await?;
        let ring = self.tokens.keyring();
        let lifetime = self.session_lifetime();
        let (refresh_token, refresh_hash) = tokens::new_refresh_token();
        let session_id = Uuid::new_v4();
        let passed = self
            .db
            .run(move |c| {
                let mut tx = c.transaction()?;
                sessions::lock_user(&mut tx, challenge.user_id)?;
                // Under the lock: a racing attempt that won ended it.
                if !mfa::challenge_exists(&mut tx, &hash)? {
                    return Err(Error::InvalidMfaChallenge);
                }
                if !check_proof(&mut tx, ring.secrets(), challenge.user_id, &proof)? {
                    history::record(
                        &mut tx,
                        Some(challenge.user_id),
                        &challenge.login,
                        &info,
                        Outcome::BadMfaCode,
                    )?;
                    if challenge.attempts >= max {
                        mfa::end_challenge(&mut tx, &hash)?;
                    }
                    tx.commit()?;
                    return Ok(None);
                }
                mfa::end_challenge(&mut tx, &hash)?;
                failures::clear(&mut tx, &challenge.login, client)?;
                let user =
                    users::get(&mut tx, challenge.user_id)?.ok_or(Error::InvalidMfaChallenge)?;
                let mut amr = challenge.amr.clone();
                amr.push(proof.amr().to_string());
                let origin = sessions::issue(
                    &mut tx,
                    user.id,
                    session_id,
                    &refresh_hash,
                    lifetime,
                    Start::New { amr: &amr },
                    &info,
                )?;
                history::record_success(
                    &mut tx,
                    user.id,
                    &user.login,
                    &info,
                    &amr,
                    challenge.provider.as_deref(),
                )?;
                tx.commit()?;
                Ok(Some((user, origin)))
            })
            .await?;
        let (user, origin) = passed.ok_or(Error::InvalidMfaCode)?;
        self.pair(&user, session_id, refresh_token, &origin)
    }
}

fn not_enabled() -> Error {
    Error::Conflict {
        code: "mfa_not_enabled",
        detail: "no TOTP factor is enabled on this account".into(),
    }
}
