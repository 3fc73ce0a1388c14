//! Sessions and revocation: a refresh racing a revocation, the rule that a
//! session with any revoked token is dead, the absolute session lifetime
//! (`tokens.session_max_age`), and revocation expiry on the gateway's clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;

/// Holds every rotation's INSERT for 20 ms inside the refreshing transaction
/// (a login's first token is not held). The window between consuming a
/// token and committing its successor is then wide enough that a revocation
/// fired at the same moment lands inside it nearly every time, instead of
/// once in thousands: a slow database, not a change to the code under test.
const SLOW_ROTATION: &str = "
    CREATE FUNCTION slow_rotation() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM refresh_tokens WHERE session_id = NEW.session_id) THEN
            PERFORM pg_sleep(0.02);
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER slow_rotation BEFORE INSERT ON refresh_tokens
        FOR EACH ROW EXECUTE FUNCTION slow_rotation();";

/// A server with cheap password hashing (hundreds of logins) and no reuse
/// grace (a replayed token is theft at once).
async fn race_app() -> TestApp {
    let app = spawn_app_with(|c| {
        c.passwords.memory_kib = 64;
        c.passwords.iterations = 1;
        c.tokens.refresh_reuse_grace = Duration::ZERO;
        c.database.pool_size = 8;
    })
    .await;
    app.db.with(|c| c.batch_execute(SLOW_ROTATION).unwrap());
    app
}

#[derive(Debug, Clone, Copy)]
enum Revoker {
    Logout,
    LogoutAll,
    PasswordChange,
    /// The session's first token replayed after it was rotated.
    Reuse,
}

/// Logs `login` in with `password`; (access token, refresh token, session id).
async fn session(app: &TestApp, login: &str, password: &str) -> (String, String, String) {
    let l = app.login(login, password).await;
    assert_eq!(l.status, 200, "{}", l.body);
    let access = l.body["access_token"].as_str().unwrap().to_string();
    let refresh = l.body["refresh_token"].as_str().unwrap().to_string();
    let sid = claims(&access)["sid"].as_str().unwrap().to_string();
    (access, refresh, sid)
}

/// Refresh tokens of `sid` that could still be used: unused, unrevoked, unexpired.
fn live_tokens(app: &TestApp, sid: &str) -> i64 {
    app.db.count(&format!(
        "SELECT count(*) FROM refresh_tokens WHERE session_id = '{sid}'
           AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()"
    ))
}

/// A refresh fired at the same moment as a logout, a logout-all, a password
/// change or a reuse detection, 320 times: whichever commits first, the
/// session ends dead. No live refresh token is left in the table for it,
/// the refresh's new refresh token (if the refresh won) is refused, and its
/// new access token is rejected. Without the per-user lock taken by both
/// sides, the revocation's UPDATE misses the token the refresh inserts.
#[tokio::test]
async fn a_refresh_racing_a_revocation_never_leaves_a_live_token() {
    let app = race_app().await;
    let passwords = ["first long passphrase 1", "second long passphrase 2"];
    app.signup("racer", passwords[0]).await;
    let mut current = 0;
    let kinds = [
        Revoker::Logout,
        Revoker::LogoutAll,
        Revoker::PasswordChange,
        Revoker::Reuse,
    ];
    let (mut refresh_won, mut revoker_won) = (0, 0);
    for i in 0..320 {
        let kind = kinds[i % kinds.len()];
        let (access, refresh, sid) = session(&app, "racer", passwords[current]).await;
        // Mostly the refresh goes first and the revocation follows 0-14 ms
        // later, landing while the refresh's transaction is open; one time
        // in four the revocation goes first, by 1-5 ms.
        let offset = (i as i64 * 7) % 20 - 5;
        let delay = Duration::from_millis(offset.max(0) as u64);
        let refresh_delay = Duration::from_millis((-offset).max(0) as u64);
        let refreshing = async {
            tokio::time::sleep(refresh_delay).await;
            app.refresh(&refresh).await
        };
        let (refreshed, revoked) = match kind {
            Revoker::Logout => {
                let revoking = async {
                    tokio::time::sleep(delay).await;
                    app.send(Method::POST, "/api/v1/auth/logout", Some(&access), None)
                        .await
                };
                let (a, b) = tokio::join!(refreshing, revoking);
                (a, b.status.as_u16())
            }
            Revoker::LogoutAll => {
                let revoking = async {
                    tokio::time::sleep(delay).await;
                    app.send(Method::POST, "/api/v1/auth/logout-all", Some(&access), None)
                        .await
                };
                let (a, b) = tokio::join!(refreshing, revoking);
                (a, b.status.as_u16())
            }
            Revoker::PasswordChange => {
                // The refreshed session is another one; the caller's is kept.
                let (keeper, _, _) = session(&app, "racer", passwords[current]).await;
                let body = json!({"old_password": passwords[current],
                                  "new_password": passwords[1 - current]});
                let revoking = async {
                    tokio::time::sleep(delay).await;
                    app.send(
                        Method::PATCH,
                        "/api/v1/users/me/password",
                        Some(&keeper),
                        Some(body),
                    )
                    .await
                };
                let (a, b) = tokio::join!(refreshing, revoking);
                current = 1 - current;
                (a, b.status.as_u16())
            }
            Revoker::Reuse => {
                let next = app.refresh(&refresh).await;
                assert_eq!(next.status, 200, "{}", next.body);
                let next = next.body["refresh_token"].as_str().unwrap().to_string();
                let replay = async {
                    tokio::time::sleep(delay).await;
                    app.refresh(&refresh).await
                };
                let legit = async {
                    tokio::time::sleep(refresh_delay).await;
                    app.refresh(&next).await
                };
                let (replayed, legit) = tokio::join!(replay, legit);
                replayed.assert_problem(401, "refresh_token_reused");
                (legit, 401)
            }
        };
        assert!(
            matches!(revoked, 204 | 401),
            "{kind:?} #{i}: revocation answered {revoked}"
        );
        assert_eq!(
            live_tokens(&app, &sid),
            0,
            "{kind:?} #{i}: a revoked session kept a live refresh token"
        );
        if refreshed.status == 200 {
            refresh_won += 1;
            let new_access = refreshed.body["access_token"].as_str().unwrap();
            let new_refresh = refreshed.body["refresh_token"].as_str().unwrap();
            app.get("/api/v1/auth/check", Some(new_access))
                .await
                .assert_problem(401, "invalid_token");
            let again = app.refresh(new_refresh).await;
            assert_eq!(again.status, 401, "{kind:?} #{i}: {}", again.body);
        } else {
            revoker_won += 1;
            assert_eq!(refreshed.status, 401, "{kind:?} #{i}: {}", refreshed.body);
        }
    }
    eprintln!("refresh committed first {refresh_won} times, the revocation {revoker_won} times");
    assert_eq!(
        app.db.count(
            "SELECT count(*) FROM refresh_tokens t
             WHERE used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
               AND EXISTS (SELECT 1 FROM refresh_tokens r
                           WHERE r.session_id = t.session_id AND r.revoked_at IS NOT NULL)"
        ),
        0,
        "a session with a revoked token still has a live one"
    );
}

/// A session with any revoked token is refused, even when the token
/// presented is its newest and was never revoked itself (what a refresh
/// that raced past a revocation would leave behind).
#[tokio::test]
async fn a_session_with_any_revoked_token_cannot_be_refreshed() {
    let app = spawn_app().await;
    let (_, _, first) = app.user("alice").await;
    let second = app.refresh(&first).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let second = second.body["refresh_token"].as_str().unwrap().to_string();
    // Only the consumed first token is revoked; the second is untouched.
    app.db
        .query("UPDATE refresh_tokens SET revoked_at = now() WHERE used_at IS NOT NULL");
    app.refresh(&second)
        .await
        .assert_problem(401, "invalid_refresh_token");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM refresh_tokens WHERE used_at IS NULL"),
        1,
        "the refused token was not consumed and nothing was issued"
    );
}

/// With `tokens.session_max_age` = 1 h, every refresh token of a session
/// expires by the session's start + 1 h, whatever `refresh_ttl` (30 days)
/// says, rotation carries the start forward unchanged, and once the session
/// is older than 1 h its token is refused although the token itself has not
/// expired. Time is moved by ageing the rows, not by sleeping.
#[tokio::test]
async fn rotation_never_extends_a_session_beyond_its_max_age() {
    let app = spawn_app_with(|c| c.tokens.session_max_age = Duration::from_secs(3600)).await;
    let (_, _, token) = app.user("alice").await;
    let capped = "SELECT count(*) FROM refresh_tokens
                  WHERE expires_at > session_started_at + interval '1 hour'";
    assert_eq!(
        app.db.count(capped),
        0,
        "the login's token outlives the session"
    );
    assert_eq!(
        app.db.count(
            "SELECT count(*) FROM refresh_tokens WHERE expires_at < now() + interval '59 minutes'"
        ),
        0,
        "the login's token is capped at the session's end, not shorter"
    );
    // 50 minutes into the session, a refresh gets a token for the last 10.
    app.db.query(
        "UPDATE refresh_tokens SET session_started_at = session_started_at - interval '50 minutes',
                                   issued_at = issued_at - interval '50 minutes',
                                   expires_at = expires_at - interval '50 minutes'",
    );
    let started = app
        .db
        .query("SELECT session_started_at FROM refresh_tokens")[0]
        .get::<_, chrono::DateTime<chrono::Utc>>(0);
    let next = app.refresh(&token).await;
    assert_eq!(next.status, 200, "{}", next.body);
    let next = next.body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(app.db.count(capped), 0, "rotation extended the session");
    assert_eq!(
        app.db.count(
            "SELECT count(*) FROM refresh_tokens
             WHERE used_at IS NULL AND expires_at < now() + interval '11 minutes'"
        ),
        1,
        "the new token expires with the session, about 10 minutes from now"
    );
    assert_eq!(
        app.db
            .query("SELECT DISTINCT session_started_at FROM refresh_tokens")
            .iter()
            .map(|r| r.get::<_, chrono::DateTime<chrono::Utc>>(0))
            .collect::<Vec<_>>(),
        vec![started],
        "rotation carries the session's start"
    );
    // 70 minutes in: the token (valid 10 more minutes by its own expiry, as
    // if max_age had been lowered since) is refused.
    app.db.query(
        "UPDATE refresh_tokens SET session_started_at = session_started_at - interval '20 minutes',
                                   expires_at = now() + interval '10 minutes'",
    );
    app.refresh(&next)
        .await
        .assert_problem(401, "invalid_refresh_token");
}

/// Sessions that existed before V5 get the start of their oldest token, the
/// same for every token of a session.
#[test]
fn migration_gives_existing_sessions_their_first_token_as_start() {
    let db = TestDb::create();
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let (v1, v2, v3) = (
        read("V1__users_and_roles.sql"),
        read("V2__sessions_and_revocations.sql"),
        read("V3__audit_log.sql"),
    );
    let v4 = read("V5__session_started_at.sql");
    let (wrong, distinct) = db.with(move |c| {
        c.batch_execute(&format!("{v1}\n{v2}\n{v3}")).unwrap();
        c.batch_execute(
            "INSERT INTO users (id, login, password_hash)
                 VALUES ('00000000-0000-0000-0000-000000000001', 'old', 'x');
             INSERT INTO refresh_tokens (user_id, session_id, token_hash, issued_at, expires_at)
             SELECT '00000000-0000-0000-0000-000000000001',
                    CASE WHEN i < 4 THEN '00000000-0000-0000-0000-0000000000aa'::uuid
                         ELSE '00000000-0000-0000-0000-0000000000bb'::uuid END,
                    sha256(i::text::bytea), now() - make_interval(days => 10 - i), now()
             FROM generate_series(1, 5) i;",
        )
        .unwrap();
        c.batch_execute(&v4).unwrap();
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE session_started_at <>
                            (SELECT min(issued_at) FROM refresh_tokens r
                             WHERE r.session_id = t.session_id)),
                        count(DISTINCT session_started_at)
                 FROM refresh_tokens t",
                &[],
            )
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    });
    assert_eq!((wrong, distinct), (0, 2));
}

/// The database's clock running an hour behind the gateway's (simulated by
/// a `now()` that shadows pg_catalog's on the gateway's connections): a
/// logout still rejects the session's access token, on this process and on
/// one started afterwards that loads the table. Reckoned on the database's
/// clock, the revocation would have expired 45 minutes before the token.
#[tokio::test]
async fn revocation_expiry_follows_the_gateway_clock() {
    let db = std::sync::Arc::new(TestDb::migrated());
    let name = db.name.clone();
    db.with(move |c| {
        c.batch_execute(&format!(
            "CREATE SCHEMA behind;
             CREATE FUNCTION behind.now() RETURNS timestamptz LANGUAGE sql STABLE
                 AS $$ SELECT pg_catalog.now() - interval '1 hour' $$;
             ALTER DATABASE {name} SET search_path = behind, pg_catalog, public;"
        ))
        .unwrap()
    });
    let keys = keys_dir();
    let config = test_config(&db.url, keys.path());
    let app = start(db.clone(), keys.clone(), config.clone()).await;
    let skew = app
        .db
        .count("SELECT extract(epoch FROM pg_catalog.now() - now())::bigint");
    assert_eq!(
        skew, 3600,
        "connections to the database see its clock an hour behind"
    );
    let (_, access, _) = app.user("alice").await;
    let r = app
        .send(Method::POST, "/api/v1/auth/logout", Some(&access), None)
        .await;
    assert_eq!(r.status, 204);
    app.get("/api/v1/auth/check", Some(&access))
        .await
        .assert_problem(401, "invalid_token");
    let later = start(db, keys, config).await;
    later
        .get("/api/v1/auth/check", Some(&access))
        .await
        .assert_problem(401, "invalid_token");
}

/// A login whose password check raced a password change gets no session:
/// the change holds the user's lock (as `change_password` does) while the
/// login's check is done; the login, waiting on that lock, then finds the
/// hash it verified replaced and answers 401, and no refresh token is issued.
/// Without the re-check under the lock the login would answer 200 with a
/// session the change never revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_racing_a_password_change_gets_no_session() {
    let app = spawn_app_with(|c| {
        c.passwords.memory_kib = 64;
        c.passwords.iterations = 1;
    })
    .await;
    let (id, _, _) = app.user("alice").await;
    let before = app.db.count("SELECT count(*) FROM refresh_tokens");
    let new_hash = gateway::passwords::hash(&app.config.passwords, "a brand new password").unwrap();
    let url = app.db.url.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    // The password change: lock, wait until the login waits for the lock,
    // replace the hash, commit (which releases the lock).
    let changer = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut watch = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('authgw.user:' || $1::uuid::text, 0))",
            &[&uuid::Uuid::parse_str(&id).unwrap()],
        )
        .unwrap();
        locked_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut login_waited = false;
        while std::time::Instant::now() < deadline {
            let waiting: i64 = watch
                .query_one(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                     WHERE l.locktype = 'advisory' AND NOT l.granted
                       AND d.datname = current_database()",
                    &[],
                )
                .unwrap()
                .get(0);
            if waiting > 0 {
                login_waited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tx.execute(
            "UPDATE users SET password_hash = $1 WHERE login = 'alice'",
            &[&new_hash],
        )
        .unwrap();
        tx.commit().unwrap();
        login_waited
    });
    tokio::task::spawn_blocking(move || locked_rx.recv().unwrap())
        .await
        .unwrap();
    let r = app.login("alice", PASSWORD).await;
    let login_waited = tokio::task::spawn_blocking(move || changer.join().unwrap())
        .await
        .unwrap();
    assert!(login_waited, "the login never waited for the user's lock");
    r.assert_problem(401, "invalid_credentials");
    assert_eq!(
        app.db.count("SELECT count(*) FROM refresh_tokens"),
        before,
        "a session was issued across the password change"
    );
}
