//! Failed password checks: per (account, client), which locks with an
//! exponential backoff, and per account, which only slows. Used by login and
//! by every check of a current password behind a token.
//!
//! An attempt is *claimed* before its password is verified: the claim counts
//! it as a failure, atomically with the lock test (one upsert, so parallel
//! claims serialize on the row), and a success deletes the counts again. So
//! when a lock ends, of many guesses sent at once only as many as the
//! threshold leaves room for are verified; past the threshold, one.

use std::net::IpAddr;
use std::time::Duration;

use postgres::GenericClient;

use crate::config::LimitsConfig;
use crate::error::Result;

/// What a claim allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Verify the password; first wait `delay` (zero unless the account is
    /// past its account-wide threshold).
    Allowed { delay: Duration },
    /// The (account, client) pair is locked: verify nothing.
    Locked { retry_after: Duration },
}

/// Claims one password check of `login` from `client` (a
/// [`crate::client_key`]), counting it as a failure until [`clear`] says
/// otherwise.
pub fn claim(
    c: &mut impl GenericClient,
    login: &str,
    client: IpAddr,
    limits: &LimitsConfig,
) -> Result<Claim> {
    let login = login.to_lowercase();
    let threshold = i32::try_from(limits.lockout_threshold).unwrap_or(i32::MAX);
    let (base, max) = (
        limits.lockout_base.as_secs_f64(),
        limits.lockout_max.as_secs_f64(),
    );
    let claimed = c.query_opt(
        "INSERT INTO login_failures AS f (login, client, failures, locked_until)
         VALUES ($1, $2, 1, CASE WHEN 1 >= $3
                             THEN now() + make_interval(secs => least($5::float8, $4::float8)) END)
         ON CONFLICT (login, client) DO UPDATE SET
           failures = f.failures + 1,
           locked_until = CASE WHEN f.failures + 1 >= $3
             THEN now() + make_interval(secs => least($5::float8,
                    $4::float8 * power(2, least(f.failures + 1 - $3, 30))))
             ELSE f.locked_until END,
           last_failed_at = now()
         WHERE f.locked_until IS NULL OR f.locked_until <= now()
         RETURNING failures",
        &[&login, &client, &threshold, &base, &max],
    )?;
    if claimed.is_none() {
        let left: Option<f64> = c
            .query_opt(
                "SELECT greatest(extract(epoch FROM locked_until - now()), 0)::float8
                 FROM login_failures WHERE login = $1 AND client = $2",
                &[&login, &client],
            )?
            .and_then(|r| r.get(0));
        let retry_after =
            Duration::try_from_secs_f64(left.unwrap_or(1.0)).unwrap_or(Duration::from_secs(1));
        return Ok(Claim::Locked { retry_after });
    }
    let account: i32 = c
        .query_one(
            "INSERT INTO account_failures AS a (login, failures) VALUES ($1, 1)
             ON CONFLICT (login) DO UPDATE SET failures = a.failures + 1, last_failed_at = now()
             RETURNING failures",
            &[&login],
        )?
        .get(0);
    let past = i64::from(account) > i64::from(limits.account_threshold);
    Ok(Claim::Allowed {
        delay: if past {
            limits.account_delay
        } else {
            Duration::ZERO
        },
    })
}

/// The password was right: forgets the pair's failures and the account's.
pub fn clear(c: &mut impl GenericClient, login: &str, client: IpAddr) -> Result<()> {
    let login = login.to_lowercase();
    c.execute(
        "DELETE FROM login_failures WHERE login = $1 AND client = $2",
        &[&login, &client],
    )?;
    c.execute("DELETE FROM account_failures WHERE login = $1", &[&login])?;
    Ok(())
}

/// The password was right but the login waits for its second factor: the
/// password's claim is taken back, and the failures before it (wrong codes
/// of earlier challenges included) stay until the second factor succeeds
/// ([`clear`]). A lock the claim started ends with it when the count falls
/// back under the threshold (the right password was the threshold-th
/// attempt); one that the earlier failures had earned stays.
pub fn release(
    c: &mut impl GenericClient,
    login: &str,
    client: IpAddr,
    limits: &LimitsConfig,
) -> Result<()> {
    let login = login.to_lowercase();
    let threshold = i32::try_from(limits.lockout_threshold).unwrap_or(i32::MAX);
    c.execute(
        "UPDATE login_failures SET failures = greatest(failures - 1, 0),
                locked_until = CASE WHEN failures - 1 < $3 THEN NULL ELSE locked_until END
         WHERE login = $1 AND client = $2",
        &[&login, &client, &threshold],
    )?;
    c.execute(
        "UPDATE account_failures SET failures = greatest(failures - 1, 0) WHERE login = $1",
        &[&login],
    )?;
    Ok(())
}

/// Forgets every failed check of the account, from every client (its
/// password was just reset by someone who controls its address).
pub fn clear_account(c: &mut impl GenericClient, login: &str) -> Result<()> {
    let login = login.to_lowercase();
    c.execute("DELETE FROM login_failures WHERE login = $1", &[&login])?;
    c.execute("DELETE FROM account_failures WHERE login = $1", &[&login])?;
    Ok(())
}

/// Forgets counters whose last failure is older than `age` (and whose lock,
/// if any, has ended). Returns the rows deleted.
pub fn purge_stale(c: &mut impl GenericClient, age: Duration) -> Result<u64> {
    let secs = age.as_secs_f64();
    let pairs = c.execute(
        "DELETE FROM login_failures
         WHERE last_failed_at < now() - make_interval(secs => $1::float8)
           AND (locked_until IS NULL OR locked_until < now())",
        &[&secs],
    )?;
    let accounts = c.execute(
        "DELETE FROM account_failures
         WHERE last_failed_at < now() - make_interval(secs => $1::float8)",
        &[&secs],
    )?;
    Ok(pairs + accounts)
}
