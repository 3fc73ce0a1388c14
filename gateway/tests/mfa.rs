//! Multi-factor authentication end to end (issue 16): TOTP enrolment and
//! confirmation, the two-step login, recovery codes, disabling, the
//! administrators' reset, `amr`/`auth_time` in tokens through refresh, check
//! and introspection, `auth.require_mfa_for_admins`, the sealed secret at
//! rest and its key rotation, and the hostile cases (replay, guessing,
//! drift, races, malformed input).
//!
//! Every code the tests present is computed by totp-rs, an RFC 6238
//! implementation that is not the gateway's, from the `otpauth://` URI the
//! enrolment returns, as an authenticator app would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

// ---------- the authenticator ----------

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Waits out the last five seconds of a 30-second step, so a code computed
/// now is checked by the server in the same step.
async fn settle() {
    let into = unix_now() % 30.0;
    if into >= 25.0 {
        tokio::time::sleep(Duration::from_secs_f64(30.0 - into + 0.1)).await;
    }
}

/// An authenticator app: totp-rs fed with the enrolment's URI, and the last
/// step whose code the gateway accepted (it never accepts one twice).
struct Authenticator {
    totp: totp_rs::Totp,
    secret_base32: String,
    last: Option<u64>,
}

impl Authenticator {
    fn from_enrolment(body: &Value) -> Self {
        let uri = body["otpauth_uri"].as_str().unwrap();
        let totp = totp_rs::Totp::from_url(uri).unwrap();
        Self {
            secret_base32: body["secret"].as_str().unwrap().to_string(),
            totp,
            last: None,
        }
    }

    /// The code of the step `offset` seconds from now (not recorded).
    fn at_offset(&self, offset: i64) -> String {
        let at = (unix_now() as i64 + offset) as u64;
        self.totp.generate(at).to_string()
    }

    /// A code the gateway has not accepted yet: the current step's, else
    /// the next one's (within the gateway's one step of drift); when both
    /// were used, the next step's once the clock gets there.
    async fn fresh(&mut self) -> String {
        loop {
            settle().await;
            let current = (unix_now() as u64) / 30;
            let step = match self.last {
                Some(last) if last >= current => last + 1,
                _ => current,
            };
            if step <= current + 1 {
                self.last = Some(step);
                return self.totp.generate(step * 30).to_string();
            }
            let wait = ((current + 1) * 30) as f64 - unix_now() + 0.1;
            tokio::time::sleep(Duration::from_secs_f64(wait.max(0.1))).await;
        }
    }
}

// ---------- helpers ----------

async fn enrol(app: &TestApp, token: &str) -> (Reply, Authenticator) {
    let r = app
        .post(
            "/api/v1/users/me/mfa/totp",
            Some(token),
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_schema(&r.body, "MfaEnrolment");
    let auth = Authenticator::from_enrolment(&r.body);
    (r, auth)
}

/// Enrols and confirms; returns the authenticator and the recovery codes.
async fn enable(app: &TestApp, token: &str) -> (Authenticator, Vec<String>) {
    let (_, mut auth) = enrol(app, token).await;
    let code = auth.fresh().await;
    let r = app
        .post(
            "/api/v1/users/me/mfa/totp/confirm",
            Some(token),
            json!({"code": code}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_schema(&r.body, "RecoveryCodes");
    let codes = r.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (auth, codes)
}

/// The first step of a login for a user with a factor: its challenge.
async fn challenge(app: &TestApp, login: &str) -> String {
    let r = app.login(login, PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["mfa_required"], true, "{}", r.body);
    assert!(r.body.get("access_token").is_none(), "{}", r.body);
    assert_schema(&r.body, "MfaChallenge");
    r.body["challenge"].as_str().unwrap().to_string()
}

async fn second_step(app: &TestApp, challenge: &str, proof: Value) -> Reply {
    let mut body = json!({"challenge": challenge});
    for (k, v) in proof.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.post("/api/v1/auth/login/mfa", None, body).await
}

/// A full two-step login with a fresh TOTP code; returns (access, refresh).
async fn login_with_totp(app: &TestApp, login: &str, auth: &mut Authenticator) -> (String, String) {
    let ch = challenge(app, login).await;
    let code = auth.fresh().await;
    let r = second_step(app, &ch, json!({"code": code})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_schema(&r.body, "TokenPair");
    (
        r.body["access_token"].as_str().unwrap().to_string(),
        r.body["refresh_token"].as_str().unwrap().to_string(),
    )
}

/// A TOTP code that is surely wrong now: the current code with its last
/// digit changed, and checked against the drift window too.
fn wrong_code(auth: &Authenticator) -> String {
    let window: Vec<String> = [-30, 0, 30].iter().map(|o| auth.at_offset(*o)).collect();
    (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !window.contains(c))
        .unwrap()
}

fn amr(token: &str) -> Value {
    claims(token)["amr"].clone()
}

// ---------- enrolment and the two-step login ----------

/// The whole flow: enrolment (secret, URI, SVG QR code; password needed),
/// a pending factor that does not yet guard logins, confirmation with a
/// code from an independent implementation (ten recovery codes), then the
/// two-step login whose tokens say `amr` ["pwd","otp"] and `auth_time`,
/// kept by refresh and reported by check, introspection and the history.
#[tokio::test]
async fn enrolment_confirmation_and_two_step_login() {
    let app = spawn_app().await;
    let (id, token, _) = app.user("alice").await;
    assert_eq!(amr(&token), json!(["pwd"]));
    let status = app.get("/api/v1/users/me/mfa", Some(&token)).await;
    assert_schema(&status.body, "MfaStatus");
    assert_eq!(
        (&status.body["enabled"], &status.body["pending"]),
        (&json!(false), &json!(false))
    );

    // A stolen access token alone cannot enrol.
    app.post(
        "/api/v1/users/me/mfa/totp",
        Some(&token),
        json!({"password": "not the password at all"}),
    )
    .await
    .assert_problem(401, "invalid_credentials");

    let (enrolment, mut auth) = enrol(&app, &token).await;
    assert_eq!(enrolment.header("cache-control"), Some("no-store"));
    let uri = enrolment.body["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/authgw:alice?secret=")
            && uri.contains("issuer=authgw")
            && uri.contains("digits=6")
            && uri.contains("period=30"),
        "{uri}"
    );
    assert_eq!(auth.totp.secret().to_base32(), auth.secret_base32);
    assert_eq!(auth.totp.secret().as_ref().len(), 20, "160-bit secret");
    let svg = enrolment.body["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));

    // Pending: the password alone still logs in.
    let pending = app.login("alice", PASSWORD).await;
    assert!(pending.body["access_token"].is_string(), "{}", pending.body);

    // The row holds no plaintext secret, in bytes or base32.
    let row = &app
        .db
        .query("SELECT secret_sealed, key_id, confirmed_at IS NULL FROM mfa_totp")[0];
    let sealed: Vec<u8> = row.get(0);
    let key_id: String = row.get(1);
    assert!(row.get::<_, bool>(2), "pending");
    assert!(!sealed.windows(20).any(|w| w == auth.totp.secret().as_ref()));
    assert!(!String::from_utf8_lossy(&sealed).contains(&auth.secret_base32));
    let ring = gateway::secrets::SecretRing::load(app.keys.path()).unwrap();
    assert_eq!(key_id, ring.current().kid());

    // Confirmation wants a right code.
    app.post(
        "/api/v1/users/me/mfa/totp/confirm",
        Some(&token),
        json!({"code": wrong_code(&auth)}),
    )
    .await
    .assert_problem(400, "invalid_mfa_code");
    let code = auth.fresh().await;
    let confirmed = app
        .post(
            "/api/v1/users/me/mfa/totp/confirm",
            Some(&token),
            json!({"code": code}),
        )
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(confirmed.header("cache-control"), Some("no-store"));
    let codes = confirmed.body["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| c.as_str().unwrap().len() == 19));
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM mfa_recovery_codes WHERE used_at IS NULL"),
        10
    );
    let me = app.get("/api/v1/users/me", Some(&token)).await;
    assert_eq!(me.body["mfa_enabled"], true, "{}", me.body);
    // A second enrolment is refused while this one is on.
    app.post(
        "/api/v1/users/me/mfa/totp",
        Some(&token),
        json!({"password": PASSWORD}),
    )
    .await
    .assert_problem(409, "mfa_already_enabled");

    // The password now answers a challenge, not tokens.
    let first = app.login("alice", PASSWORD).await;
    assert_eq!(first.header("cache-control"), Some("no-store"));
    assert_eq!(
        first.body["methods"],
        json!(["totp", "recovery_code"]),
        "{}",
        first.body
    );
    assert_eq!(first.body["expires_in"], 300);
    let before = chrono::Utc::now().timestamp();
    let (access, refresh) = login_with_totp(&app, "alice", &mut auth).await;
    let c = claims(&access);
    assert_eq!(c["amr"], json!(["pwd", "otp"]));
    let auth_time = c["auth_time"].as_i64().unwrap();
    assert!(
        (before - 2..=before + 5).contains(&auth_time),
        "{auth_time} vs {before}"
    );

    // Refresh keeps the session's amr and auth_time.
    let refreshed = app.refresh(&refresh).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let next = refreshed.body["access_token"].as_str().unwrap();
    assert_eq!(amr(next), json!(["pwd", "otp"]));
    assert_eq!(claims(next)["auth_time"].as_i64(), Some(auth_time));

    let check = app.get("/api/v1/auth/check", Some(next)).await;
    assert_eq!(check.status, 200, "{}", check.body);
    assert_eq!(check.body["amr"], json!(["pwd", "otp"]));
    assert!(check.body["auth_time"].is_string(), "{}", check.body);
    let intro = app.introspect(json!({"token": next})).await;
    assert_eq!(intro.body["amr"], json!(["pwd", "otp"]));
    assert_eq!(intro.body["auth_time"].as_i64(), Some(auth_time));

    let history = app.get("/api/v1/users/me/history", Some(next)).await;
    let items = history.body["items"].as_array().unwrap();
    assert_eq!(items[0]["outcome"], "success");
    assert_eq!(items[0]["amr"], json!(["pwd", "otp"]));
    assert_eq!(items[1]["outcome"], "mfa_required");
    let admin = app.admin("root").await;
    let listed = app.get(&format!("/api/v1/users/{id}"), Some(&admin)).await;
    assert_eq!(listed.body["mfa_enabled"], true, "{}", listed.body);
    assert!(
        app.metrics_text()
            .await
            .contains("authgw_mfa_verifications_total{method=\"totp\",result=\"success\"} 2"),
    );
}

/// Cookie mode: the challenge carries no cookie; the second step owes the
/// CSRF proof and then sets the refresh cookie, with only the access token
/// in the body.
#[tokio::test]
async fn second_step_in_cookie_mode() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("carol").await;
    let (mut auth, _) = enable(&app, &token).await;
    let browser = |req: reqwest::RequestBuilder| {
        req.header("origin", app.base.as_str())
            .header("x-requested-with", "authgw")
    };
    let first = reply(
        browser(app.http.post(app.url("/api/v1/auth/login")))
            .json(&json!({"login": "carol", "password": PASSWORD, "cookie": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first.body["mfa_required"], true, "{}", first.body);
    assert!(first.headers.get("set-cookie").is_none());
    let ch = first.body["challenge"].as_str().unwrap();
    let code = auth.fresh().await;
    let body = json!({"challenge": ch, "code": code, "cookie": true});
    app.post("/api/v1/auth/login/mfa", None, body.clone())
        .await
        .assert_problem(403, "csrf_rejected");
    let done = reply(
        browser(app.http.post(app.url("/api/v1/auth/login/mfa")))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.get("refresh_token").is_none(), "{}", done.body);
    assert_eq!(
        amr(done.body["access_token"].as_str().unwrap()),
        json!(["pwd", "otp"])
    );
    let cookies: Vec<&str> = done
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.contains("refresh") && c.contains("HttpOnly")),
        "{cookies:?}"
    );
}

// ---------- replay, guessing, drift, races ----------

/// A code is accepted once: the same code on a second challenge, even
/// within its 30 seconds, is refused.
#[tokio::test]
async fn a_code_is_accepted_once() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("dave").await;
    let (mut auth, _) = enable(&app, &token).await;
    let code = auth.fresh().await;
    let first = challenge(&app, "dave").await;
    let ok = second_step(&app, &first, json!({"code": code})).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let again = challenge(&app, "dave").await;
    second_step(&app, &again, json!({"code": code}))
        .await
        .assert_problem(400, "invalid_mfa_code");
    let history = app
        .db
        .count("SELECT count(*) FROM login_history WHERE outcome = 'bad_mfa_code'");
    assert_eq!(history, 1);
}

/// A challenge takes five codes, then dies: the sixth attempt, even with the
/// right code, is `invalid_mfa_challenge`; the five wrong codes count toward
/// the (account, client) lockout, so the next login is refused with 429.
#[tokio::test]
async fn a_challenge_dies_after_five_attempts_and_failures_lock() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("erin").await;
    let (mut auth, _) = enable(&app, &token).await;
    let ch = challenge(&app, "erin").await;
    let wrong = wrong_code(&auth);
    for attempt in 1..=5 {
        let r = second_step(&app, &ch, json!({"code": wrong})).await;
        assert_eq!(r.status, 400, "attempt {attempt}: {}", r.body);
    }
    let right = auth.fresh().await;
    second_step(&app, &ch, json!({"code": right}))
        .await
        .assert_problem(401, "invalid_mfa_challenge");
    assert_eq!(app.db.count("SELECT count(*) FROM mfa_challenges"), 0);
    let locked = app.login("erin", PASSWORD).await;
    locked.assert_problem(429, "too_many_attempts");
    assert!(locked.header("retry-after").is_some());
    assert!(
        app.metrics_text()
            .await
            .contains("authgw_mfa_verifications_total{method=\"totp\",result=\"failure\"} 5"),
    );
}

/// A right password does not reset the code failures: wrong codes on one
/// challenge, then a new login and more wrong codes, lock the pair as if
/// they had been sent on one challenge (a stolen password gets no fresh
/// budget of guesses per login).
#[tokio::test]
async fn a_new_login_does_not_reset_the_code_failures() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("fay").await;
    let (auth, _) = enable(&app, &token).await;
    let wrong = wrong_code(&auth);
    let first = challenge(&app, "fay").await;
    for _ in 0..3 {
        assert_eq!(
            second_step(&app, &first, json!({"code": wrong}))
                .await
                .status,
            400
        );
    }
    let second = challenge(&app, "fay").await;
    for _ in 0..2 {
        assert_eq!(
            second_step(&app, &second, json!({"code": wrong}))
                .await
                .status,
            400
        );
    }
    app.login("fay", PASSWORD)
        .await
        .assert_problem(429, "too_many_attempts");
}

/// A right password that is the threshold-th attempt (four wrong ones
/// before it) still reaches the second factor: the lock its own claim
/// started is released with it, and the right code then logs in.
#[tokio::test]
async fn a_right_password_at_the_threshold_still_reaches_the_second_factor() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("flo").await;
    let (mut auth, _) = enable(&app, &token).await;
    for _ in 0..4 {
        app.login("flo", "a wrong password, surely")
            .await
            .assert_problem(401, "invalid_credentials");
    }
    let (access, _) = login_with_totp(&app, "flo", &mut auth).await;
    assert_eq!(amr(&access), json!(["pwd", "otp"]));
    assert_eq!(app.db.count("SELECT count(*) FROM login_failures"), 0);
}

/// Clock drift: a code 30 s early or late is accepted, 90 s is not (at
/// confirmation, which has no earlier step, and at login).
#[tokio::test]
async fn drift_of_thirty_seconds_is_accepted_ninety_is_not() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("gil").await;
    let (_, auth) = enrol(&app, &token).await;
    settle().await;
    for offset in [-90, 90] {
        app.post(
            "/api/v1/users/me/mfa/totp/confirm",
            Some(&token),
            json!({"code": auth.at_offset(offset)}),
        )
        .await
        .assert_problem(400, "invalid_mfa_code");
    }
    let early = auth.at_offset(-30);
    let r = app
        .post(
            "/api/v1/users/me/mfa/totp/confirm",
            Some(&token),
            json!({"code": early}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ch = challenge(&app, "gil").await;
    for offset in [-90, 90] {
        second_step(&app, &ch, json!({"code": auth.at_offset(offset)}))
            .await
            .assert_problem(400, "invalid_mfa_code");
    }
    let late = auth.at_offset(30);
    let r = second_step(&app, &ch, json!({"code": late})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Eight parallel second steps with the same right code on one challenge
/// give exactly one session.
#[tokio::test]
async fn parallel_second_steps_give_one_session() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("hal").await;
    let (mut auth, _) = enable(&app, &token).await;
    let ch = challenge(&app, "hal").await;
    let code = auth.fresh().await;
    let sessions_before = app
        .db
        .count("SELECT count(DISTINCT session_id) FROM refresh_tokens");
    let answers =
        futures::future::join_all((0..8).map(|_| second_step(&app, &ch, json!({"code": code}))))
            .await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        1,
        "{:?}",
        answers.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(
        app.db
            .count("SELECT count(DISTINCT session_id) FROM refresh_tokens"),
        sessions_before + 1
    );
}

/// Hostile input on the second step: malformed challenges; codes too
/// short, too long, with letters, in full-width digits or huge (each takes
/// one of the challenge's five attempts); both kinds at once, neither, and
/// unknown fields (refused before the challenge is touched). Each gets its
/// clear problem, and nothing is issued.
#[tokio::test]
async fn hostile_second_steps() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("ivy").await;
    let (auth, _) = enable(&app, &token).await;
    let code = auth.at_offset(0);
    for bad in [
        "",
        "x",
        &"A".repeat(43),
        &"é".repeat(22),
        &"a".repeat(10_000),
    ] {
        second_step(&app, bad, json!({"code": code}))
            .await
            .assert_problem(401, "invalid_mfa_challenge");
    }
    let ch = challenge(&app, "ivy").await;
    for bad in [
        "12345",
        "1234567",
        "12a456",
        "１２３４５６",
        &"9".repeat(5000),
    ] {
        second_step(&app, &ch, json!({"code": bad}))
            .await
            .assert_problem(400, "invalid_mfa_code");
    }
    let both = second_step(
        &app,
        &ch,
        json!({"code": code, "recovery_code": "abcd-efgh-ijkl-mnop"}),
    )
    .await;
    both.assert_problem(422, "invalid_field");
    second_step(&app, &ch, json!({}))
        .await
        .assert_problem(422, "invalid_field");
    second_step(&app, &ch, json!({"code": code, "admin": true}))
        .await
        .assert_problem(400, "unknown_field");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM refresh_tokens WHERE user_id IS NOT NULL"),
        1
    );
}

/// A password change ends the challenges its old password opened.
#[tokio::test]
async fn a_password_change_ends_pending_challenges() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("jon").await;
    let (mut auth, _) = enable(&app, &token).await;
    let ch = challenge(&app, "jon").await;
    let changed = app
        .send(
            Method::PATCH,
            "/api/v1/users/me/password",
            Some(&token),
            Some(json!({"old_password": PASSWORD, "new_password": "a different long passphrase"})),
        )
        .await;
    assert_eq!(changed.status, 204, "{}", changed.body);
    let code = auth.fresh().await;
    second_step(&app, &ch, json!({"code": code}))
        .await
        .assert_problem(401, "invalid_mfa_challenge");
}

// ---------- recovery codes ----------

/// A recovery code logs in once (`amr` ["pwd","rcode"]); regenerating needs
/// a current TOTP code and kills the old set; the last codes leave the
/// login's methods without `recovery_code`.
#[tokio::test]
async fn recovery_codes_are_single_use_and_regenerated() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("kim").await;
    let (mut auth, codes) = enable(&app, &token).await;
    let ch = challenge(&app, "kim").await;
    let used = codes[0].to_uppercase().replace('-', " ");
    let r = second_step(&app, &ch, json!({"recovery_code": used})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let access = r.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(amr(&access), json!(["pwd", "rcode"]));
    let ch = challenge(&app, "kim").await;
    second_step(&app, &ch, json!({"recovery_code": codes[0]}))
        .await
        .assert_problem(400, "invalid_mfa_code");
    let status = app.get("/api/v1/users/me/mfa", Some(&access)).await;
    assert_eq!(status.body["recovery_codes_left"], 9);

    app.post(
        "/api/v1/users/me/mfa/recovery-codes",
        Some(&access),
        json!({"code": wrong_code(&auth)}),
    )
    .await
    .assert_problem(400, "invalid_mfa_code");
    let code = auth.fresh().await;
    let fresh = app
        .post(
            "/api/v1/users/me/mfa/recovery-codes",
            Some(&access),
            json!({"code": code}),
        )
        .await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_schema(&fresh.body, "RecoveryCodes");
    let new_codes = fresh.body["recovery_codes"].as_array().unwrap();
    assert_eq!(new_codes.len(), 10);
    second_step(&app, &ch, json!({"recovery_code": codes[1]}))
        .await
        .assert_problem(400, "invalid_mfa_code");
    let r = second_step(&app, &ch, json!({"recovery_code": new_codes[0]})).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Without unused codes, the challenge offers TOTP only.
    app.db
        .query("UPDATE mfa_recovery_codes SET used_at = now()");
    let r = app.login("kim", PASSWORD).await;
    assert_eq!(r.body["methods"], json!(["totp"]), "{}", r.body);
    assert!(
        app.metrics_text().await.contains(
            "authgw_mfa_verifications_total{method=\"recovery_code\",result=\"success\"} 2"
        )
    );
}

// ---------- disabling and resets ----------

/// Disabling needs the password and a code, and ends every other session:
/// the other session's access token is refused at once; afterwards the
/// password alone logs in.
#[tokio::test]
async fn disabling_needs_password_and_code_and_ends_other_sessions() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("lee").await;
    let (mut auth, codes) = enable(&app, &token).await;
    let (mine, _) = login_with_totp(&app, "lee", &mut auth).await;
    let ch = challenge(&app, "lee").await;
    let other = second_step(&app, &ch, json!({"recovery_code": codes[0]})).await;
    let other = other.body["access_token"].as_str().unwrap().to_string();
    let disable = |body: Value| {
        app.send(
            Method::DELETE,
            "/api/v1/users/me/mfa/totp",
            Some(&mine),
            Some(body),
        )
    };
    disable(json!({"password": "wrong wrong wrong", "recovery_code": codes[1]}))
        .await
        .assert_problem(401, "invalid_credentials");
    disable(json!({"password": PASSWORD, "code": wrong_code(&auth)}))
        .await
        .assert_problem(400, "invalid_mfa_code");
    disable(json!({"password": PASSWORD}))
        .await
        .assert_problem(422, "invalid_field");
    let r = disable(json!({"password": PASSWORD, "recovery_code": codes[1]})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    app.wait_synced().await;
    app.get("/api/v1/auth/check", Some(&other))
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(app.get("/api/v1/auth/check", Some(&mine)).await.status, 200);
    assert_eq!(app.db.count("SELECT count(*) FROM mfa_totp"), 0);
    assert_eq!(app.db.count("SELECT count(*) FROM mfa_recovery_codes"), 0);
    let plain = app.login("lee", PASSWORD).await;
    assert_eq!(
        amr(plain.body["access_token"].as_str().unwrap()),
        json!(["pwd"])
    );
    disable(json!({"password": PASSWORD, "recovery_code": codes[2]}))
        .await
        .assert_problem(409, "mfa_not_enabled");
}

/// An administrator removes a lost factor through the API, and an operator
/// through the CLI; both are audited, a second reset is 404, and the user
/// logs in with the password alone. `users list` shows the factor.
#[tokio::test]
async fn administrators_reset_a_lost_factor() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let (id, token, _) = app.user("max").await;
    enable(&app, &token).await;
    let (_, other, _) = app.user("ned").await;
    enable(&app, &other).await;

    let listed = authgw(&app.db.url, &["users", "list"], None);
    let out = stdout(&listed);
    assert!(
        out.lines()
            .any(|l| l.starts_with("max\t") && l.contains("\tmfa=on\t")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("root\t") && l.contains("\tmfa=off\t")),
        "{out}"
    );

    let user = app
        .send(Method::GET, "/api/v1/users?limit=100", Some(&admin), None)
        .await;
    let max = user.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["login"] == "max")
        .unwrap()
        .clone();
    assert_eq!(max["mfa_enabled"], true);

    let r = app
        .send(
            Method::DELETE,
            &format!("/api/v1/users/{id}/mfa"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mfa_enabled"], false);
    app.send(
        Method::DELETE,
        &format!("/api/v1/users/{id}/mfa"),
        Some(&admin),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    app.send(
        Method::DELETE,
        &format!("/api/v1/users/{id}/mfa"),
        Some(&token),
        None,
    )
    .await
    .assert_problem(403, "forbidden");
    assert!(app.login("max", PASSWORD).await.body["access_token"].is_string());

    let out = authgw(&app.db.url, &["mfa", "reset", "--login", "ned"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("ned"));
    let out = authgw(&app.db.url, &["mfa", "reset", "--login", "ned"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    let out = authgw(&app.db.url, &["mfa", "reset", "--login", "nobody"], None);
    assert_eq!(
        (out.status.code(), stderr(&out).as_str()),
        (Some(1), "error: user 'nobody' not found\n")
    );
    let audit = app.db.query(
        "SELECT actor, details->>'login' FROM audit_log WHERE action = 'user.mfa_reset' ORDER BY id",
    );
    let rows: Vec<(String, String)> = audit.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0], ("root".to_string(), "max".to_string()));
    assert!(
        rows[1].0.starts_with("cli:") && rows[1].1 == "ned",
        "{rows:?}"
    );
    assert!(app.login("ned", PASSWORD).await.body["access_token"].is_string());
}

/// With `auth.require_mfa_for_admins`, an administrator's password-only
/// session is refused on the admin API with 401 `mfa_required` and the RFC
/// 9470 challenge; after enrolling and the two-step login it is let in.
/// Its own account endpoints stay open (to enrol).
#[tokio::test]
async fn administrators_can_be_required_to_use_a_second_factor() {
    let app = spawn_app_with(|c| c.auth.require_mfa_for_admins = true).await;
    let admin = app.admin("root").await;
    let refused = app.get("/api/v1/users", Some(&admin)).await;
    refused.assert_problem(401, "mfa_required");
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer error=\"insufficient_user_authentication\"")),
        "{:?}",
        refused.headers
    );
    let (mut auth, _) = enable(&app, &admin).await;
    let (strong, _) = login_with_totp(&app, "root", &mut auth).await;
    assert_eq!(app.get("/api/v1/users", Some(&strong)).await.status, 200);
    // Ordinary users are not concerned.
    let (_, user, _) = app.user("pat").await;
    assert_eq!(app.get("/api/v1/users/me", Some(&user)).await.status, 200);
}

// ---------- the secret at rest ----------

/// The secret is sealed under the keys directory's newest server secret;
/// after a new secret is generated (and reloaded) the factor still works
/// and is sealed again under the new one, after which the old secret can
/// go. A ciphertext moved to another user's row does not open.
#[tokio::test]
async fn sealed_secrets_survive_key_rotation() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("quinn").await;
    let (mut auth, _) = enable(&app, &token).await;
    let old_kid: String = app.db.query("SELECT key_id FROM mfa_totp")[0].get(0);
    let old_files: Vec<_> = std::fs::read_dir(app.keys.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "secret"))
        .collect();
    std::thread::sleep(Duration::from_millis(5));
    // What `authgw keys generate --kind secret` does.
    gateway::secrets::generate(app.keys.path()).unwrap();
    app.reloader.apply(&app.config).unwrap();
    login_with_totp(&app, "quinn", &mut auth).await;
    let new_kid: String = app.db.query("SELECT key_id FROM mfa_totp")[0].get(0);
    assert_ne!(new_kid, old_kid, "resealed under the newest secret");
    for f in old_files {
        std::fs::remove_file(f).unwrap();
    }
    app.reloader.apply(&app.config).unwrap();
    login_with_totp(&app, "quinn", &mut auth).await;

    // Another user's row with quinn's ciphertext does not open: the user
    // id is authenticated with it.
    let (_, other, _) = app.user("ruth").await;
    enrol(&app, &other).await;
    app.db.query(
        "UPDATE mfa_totp SET secret_sealed = (SELECT secret_sealed FROM mfa_totp m
           JOIN users u ON u.id = m.user_id WHERE u.login = 'quinn'),
           key_id = (SELECT key_id FROM mfa_totp m JOIN users u ON u.id = m.user_id WHERE u.login = 'quinn')
         WHERE user_id = (SELECT id FROM users WHERE login = 'ruth')",
    );
    let r = app
        .post(
            "/api/v1/users/me/mfa/totp/confirm",
            Some(&other),
            json!({"code": auth.at_offset(0)}),
        )
        .await;
    r.assert_problem(500, "internal");
}

// ---------- step-up in the proxy ----------

/// The cinema's `/admin` route (role-rules: `admin_only` and `mfa`), through
/// the proxy with real logins: an administrator's password-only session is
/// refused with 401 `mfa_required` (the RFC 9470 challenge) and the
/// upstream never sees it; after the two-step login, and with a recovery
/// code too, it passes; a user with a second factor but no admin role
/// gets 403 (stepping up would not help).
#[tokio::test]
async fn a_route_rule_demands_the_second_factor() {
    use common::upstream::{Echo, route};
    use gateway::config::{AuthMode, RouteConfig};
    let echo = Echo::start("admin").await;
    let app = spawn_app_with(|c| {
        c.plugins = vec![plugin("cinema", "role-rules", cinema_rules())];
        c.routes = vec![RouteConfig {
            plugins: vec!["cinema".into()],
            ..route("admin", "/admin", &echo.url(), AuthMode::Required)
        }];
    })
    .await;
    let admin = app.admin("root").await;
    let get = |token: String| {
        let req = app.http.get(app.url("/admin/stats")).bearer_auth(token);
        async move { reply(req.send().await.unwrap()).await }
    };
    let refused = get(admin.clone()).await;
    refused.assert_problem(401, "mfa_required");
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|h| h.contains("insufficient_user_authentication")),
        "{:?}",
        refused.headers
    );
    assert_eq!(echo.hits(), 0);

    let (mut auth, codes) = enable(&app, &admin).await;
    let (strong, _) = login_with_totp(&app, "root", &mut auth).await;
    let ok = get(strong).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(echo.hits(), 1);
    let ch = challenge(&app, "root").await;
    let rcode = second_step(&app, &ch, json!({"recovery_code": codes[0]})).await;
    let ok = get(rcode.body["access_token"].as_str().unwrap().to_string()).await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    let (_, user, _) = app.user("viewer").await;
    let (mut viewer_auth, _) = enable(&app, &user).await;
    let (viewer, _) = login_with_totp(&app, "viewer", &mut viewer_auth).await;
    get(viewer).await.assert_problem(403, "policy_denied");
    assert_eq!(echo.hits(), 2);
}

// ---------- notices ----------

/// The account's address is told, through a real SMTP server, when a
/// factor is turned on, when the user turns it off, and when an
/// administrator removes it (in the account's language): a stolen session
/// that changes the second factor does not go unseen.
#[tokio::test]
async fn factor_changes_are_mailed_to_the_account() {
    use common::smtp::{SmtpOptions, SmtpServer};
    let mut smtp = SmtpServer::start(SmtpOptions::default()).await;
    let url = smtp.url();
    let app = spawn_app_with(move |c| {
        c.email.smtp_url = url;
        c.email.poll_interval = Duration::from_millis(200);
    })
    .await;
    let signed = app
        .post(
            "/api/v1/auth/signup",
            None,
            json!({"login": "uma", "password": PASSWORD, "email": "uma@example.org", "locale": "ru"}),
        )
        .await;
    assert_eq!(signed.status, 201, "{}", signed.body);
    let verify = smtp.next().await;
    assert_eq!(verify.recipient(), "uma@example.org");
    let (token, _) = app.tokens("uma").await;

    let (_, codes) = enable(&app, &token).await;
    let on = smtp.next().await;
    assert_eq!(on.recipient(), "uma@example.org");
    assert!(
        on.subject.contains("вход в два этапа") && on.subject.contains("включён"),
        "{}",
        on.subject
    );
    assert!(
        on.text.contains("uma") && !on.text.contains('{'),
        "{}",
        on.text
    );

    let off = app
        .send(
            Method::DELETE,
            "/api/v1/users/me/mfa/totp",
            Some(&token),
            Some(json!({"password": PASSWORD, "recovery_code": codes[0]})),
        )
        .await;
    assert_eq!(off.status, 204, "{}", off.body);
    let off = smtp.next().await;
    assert!(off.subject.contains("отключён"), "{}", off.subject);

    enable(&app, &token).await;
    smtp.next().await;
    let admin = app.admin("root").await;
    let id = signed.body["id"].as_str().unwrap();
    let reset = app
        .send(
            Method::DELETE,
            &format!("/api/v1/users/{id}/mfa"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    let removed = smtp.next().await;
    assert_eq!(removed.recipient(), "uma@example.org");
    assert!(removed.subject.contains("отключён"), "{}", removed.subject);
}
