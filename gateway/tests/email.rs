//! Account recovery end to end (issue 15): address verification, address
//! changes and password reset, through the HTTP API and what really arrives
//! by mail: a real SMTP server (tests/smtp/server.py, aiosmtpd) receives
//! every message, or, with no `email.smtp_url`, `.eml` files in a
//! directory. Delivery itself (retries, failures, metrics, processes sharing
//! the outbox, the `authgw email` CLI, STARTTLS and AUTH) is
//! tests/email_delivery.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::smtp::{Mail, SmtpOptions, SmtpServer, token_from};
use common::*;
use gateway::config::Config;
use reqwest::Method;
use serde_json::{Value, json};

/// The links the default `email.verify_url` and `email.reset_url` make.
const VERIFY_LINK: &str = "http://localhost:3000/verify-email?token=";
const RESET_LINK: &str = "http://localhost:3000/reset-password?token=";

/// The subjects of the built-in English templates (product "authgw").
const VERIFY_SUBJECT: &str = "Confirm your email address for authgw";
const RESET_SUBJECT: &str = "Reset your authgw password";
const CHANGED_SUBJECT: &str = "Your authgw password was changed";
const EMAIL_CHANGED_SUBJECT: &str = "Email address change requested for your authgw account";

/// The password users get after a reset.
const NEW_PASSWORD: &str = "a brand new passphrase";

// ---------- harness ----------

/// A gateway whose mail goes to its own real SMTP server.
struct App {
    app: TestApp,
    smtp: SmtpServer,
}

impl std::ops::Deref for App {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// Starts an SMTP server and a gateway that mails through it (plaintext
/// to the loopback relay, polling every 200 ms), with `tweak` applied.
async fn mail_app(tweak: impl FnOnce(&mut Config)) -> App {
    let smtp = SmtpServer::start(SmtpOptions::default()).await;
    let url = smtp.url();
    let app = spawn_app_with(move |c| {
        c.email.smtp_url = url;
        c.email.poll_interval = Duration::from_millis(200);
        tweak(c);
    })
    .await;
    App { app, smtp }
}

impl App {
    /// The next message; asserts it went to `to` only, with `subject`.
    async fn mail(&mut self, to: &str, subject: &str) -> Mail {
        let mail = self.smtp.next().await;
        assert_eq!(mail.recipient(), to, "{mail:?}");
        assert_eq!(mail.subject, subject, "{mail:?}");
        mail
    }

    /// Signs up `login` with `email` and returns the token of the
    /// verification link mailed to it (English: no Accept-Language).
    async fn signup_with_email(&mut self, login: &str, email: &str) -> String {
        let r = self
            .post(
                "/api/v1/auth/signup",
                None,
                json!({"login": login, "password": PASSWORD, "email": email}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let mail = self.mail(email, VERIFY_SUBJECT).await;
        token_from(&mail.text, VERIFY_LINK)
    }

    /// Asks for a password reset of `login` and returns the token of the
    /// link mailed to `email`.
    async fn reset_token_for(&mut self, login: &str, email: &str) -> String {
        let r = reset_request(self, json!({ "login": login }), None).await;
        assert_eq!(r.status, 202, "{}", r.body);
        let mail = self.mail(email, RESET_SUBJECT).await;
        token_from(&mail.text, RESET_LINK)
    }
}

/// `POST path` with extra request headers.
async fn post_with(app: &TestApp, path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
    let mut req = app.http.post(app.url(path)).json(&body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    reply(req.send().await.unwrap()).await
}

/// `POST /api/v1/auth/password-reset`, optionally with `Accept-Language`.
async fn reset_request(app: &TestApp, body: Value, language: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = language
        .map(|l| ("accept-language", l))
        .into_iter()
        .collect();
    post_with(app, "/api/v1/auth/password-reset", &headers, body).await
}

/// `POST /api/v1/auth/verify-email {token}`.
async fn verify(app: &TestApp, token: &str) -> Reply {
    app.post("/api/v1/auth/verify-email", None, json!({ "token": token }))
        .await
}

/// `POST /api/v1/auth/password-reset/confirm {token, new_password}`.
async fn confirm(app: &TestApp, token: &str, new_password: &str) -> Reply {
    app.post(
        "/api/v1/auth/password-reset/confirm",
        None,
        json!({"token": token, "new_password": new_password}),
    )
    .await
}

/// `POST /api/v1/users/me/email/verify` (ask for a new verification link).
async fn resend(app: &TestApp, access: &str) -> Reply {
    app.send(
        Method::POST,
        "/api/v1/users/me/email/verify",
        Some(access),
        None,
    )
    .await
}

/// `PATCH /api/v1/users/me` with `body`.
async fn patch_me(app: &TestApp, access: &str, body: Value) -> Reply {
    app.send(Method::PATCH, "/api/v1/users/me", Some(access), Some(body))
        .await
}

/// `GET /api/v1/users/me`, which must succeed (checked against `Me`).
async fn me(app: &TestApp, access: &str) -> Value {
    let r = app.get("/api/v1/users/me", Some(access)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_schema(&r.body, "Me");
    r.body
}

/// A successful login's access token.
async fn access_token(app: &TestApp, login: &str, password: &str) -> String {
    let r = app.login(login, password).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_string()
}

/// Polls `done` every 20 ms until it holds; fails after 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rows of `email_outbox` right now.
fn outbox_rows(app: &TestApp) -> i64 {
    app.db.count("SELECT count(*) FROM email_outbox")
}

/// `users.email_verified` of `login`.
fn verified_in_db(app: &TestApp, login: &str) -> bool {
    app.db.query(&format!(
        "SELECT email_verified FROM users WHERE login = '{login}'"
    ))[0]
        .get(0)
}

// ---------- verification ----------

/// Signup with an address and `Accept-Language: ru` mails a Russian
/// verification link to that address; following it (200 {email,
/// email_verified: true}) verifies the account, which /users/me, the
/// claim of the next access token (refresh or login), /auth/check and
/// introspection show; the link is single-use;
/// only the token's SHA-256 is stored, and the outbox row keeps no body
/// (it held the link) once sent.
#[tokio::test]
async fn signup_mails_a_verification_link_that_verifies_the_address() {
    let mut app = mail_app(|_| {}).await;
    let r = post_with(
        &app,
        "/api/v1/auth/signup",
        &[("accept-language", "ru-RU,ru;q=0.9,en;q=0.5")],
        json!({"login": "alice", "password": PASSWORD, "email": "alice@example.org"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_schema(&r.body, "User");
    assert_eq!(r.body["email_verified"], false);

    let mail = app
        .mail(
            "alice@example.org",
            "Подтвердите адрес электронной почты в сервисе authgw",
        )
        .await;
    assert!(mail.text.contains("Здравствуйте, alice!"), "{}", mail.text);
    assert!(mail.text.contains("24 часа"), "{}", mail.text);
    let token = token_from(&mail.text, VERIFY_LINK);
    assert_eq!(token.len(), 43, "{token}");
    assert_eq!(token_from(&mail.html, VERIFY_LINK), token, "{}", mail.html);
    assert!(
        mail.header("from")
            .is_some_and(|f| f.contains("no-reply@localhost")),
        "{:?}",
        mail.headers
    );
    let stored = app.db.count(&format!(
        "SELECT count(*) FROM email_tokens
         WHERE token_hash = sha256(convert_to('{token}', 'UTF8')) AND purpose = 'verify'
           AND email = 'alice@example.org'"
    ));
    assert_eq!(stored, 1, "the token's SHA-256 is stored, and only that");

    let session = app.login("alice", PASSWORD).await;
    assert_eq!(session.status, 200, "{}", session.body);
    let before = session.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims(&before)["email_verified"], false);
    let body = me(&app, &before).await;
    assert_eq!(body["email"], "alice@example.org");
    assert_eq!(body["email_verified"], false);
    assert_eq!(body["pending_email"], Value::Null);

    let ok = verify(&app, &token).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_schema(&ok.body, "EmailVerified");
    assert_eq!(
        ok.body,
        json!({"email": "alice@example.org", "email_verified": true})
    );
    assert_eq!(me(&app, &before).await["email_verified"], true);

    let refreshed = app
        .refresh(session.body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let refreshed = refreshed.body["access_token"].as_str().unwrap();
    assert_eq!(claims(refreshed)["email_verified"], true);
    let after = access_token(&app, "alice", PASSWORD).await;
    assert_eq!(claims(&after)["email_verified"], true);
    let check = app.get("/api/v1/auth/check", Some(&after)).await;
    assert_eq!(check.status, 200, "{}", check.body);
    assert_schema(&check.body, "Check");
    assert_eq!(check.body["email_verified"], true);
    let introspection = app.introspect(json!({ "token": after })).await;
    assert_eq!(introspection.status, 200, "{}", introspection.body);
    assert_eq!(introspection.body["active"], true);
    assert_eq!(introspection.body["email_verified"], true);

    verify(&app, &token)
        .await
        .assert_problem(400, "invalid_email_token");

    eventually("the message is marked sent", || {
        app.db
            .count("SELECT count(*) FROM email_outbox WHERE status = 'sent'")
            == 1
    })
    .await;
    let rows = app.db.query(
        "SELECT kind, recipient, body_text IS NULL, body_html IS NULL, sent_at IS NOT NULL
         FROM email_outbox",
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "verify_email");
    assert_eq!(rows[0].get::<_, String>(1), "alice@example.org");
    assert!(rows[0].get::<_, bool>(2), "body_text kept after sending");
    assert!(rows[0].get::<_, bool>(3), "body_html kept after sending");
    assert!(rows[0].get::<_, bool>(4));
}

/// A new verification link can be asked for at most once per
/// `email.resend_interval` (60 s by default): right after signup the
/// request is refused with 429 and Retry-After, and nothing is queued.
#[tokio::test]
async fn verification_resend_waits_for_the_interval() {
    let mut app = mail_app(|_| {}).await;
    app.signup_with_email("alice", "alice@example.org").await;
    let access = access_token(&app, "alice", PASSWORD).await;
    let r = resend(&app, &access).await;
    r.assert_problem(429, "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(outbox_rows(&app), 1);
}

/// With no resend interval, a resend mails a new link (202 {email}) and
/// kills the older one; an expired link is refused; the newest works.
/// Once verified, a resend is 409 email_already_verified; an account with
/// no address gets 409 no_email.
#[tokio::test]
async fn a_resent_link_supersedes_the_older_and_expired_links_die() {
    let mut app = mail_app(|c| c.email.resend_interval = Duration::ZERO).await;
    let first = app.signup_with_email("alice", "alice@example.org").await;
    let access = access_token(&app, "alice", PASSWORD).await;

    let r = resend(&app, &access).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_schema(&r.body, "VerificationSent");
    assert_eq!(r.body, json!({"email": "alice@example.org"}));
    let second = token_from(
        &app.mail("alice@example.org", VERIFY_SUBJECT).await.text,
        VERIFY_LINK,
    );
    assert_ne!(first, second);
    verify(&app, &first)
        .await
        .assert_problem(400, "invalid_email_token");

    assert_eq!(resend(&app, &access).await.status, 202);
    let third = token_from(
        &app.mail("alice@example.org", VERIFY_SUBJECT).await.text,
        VERIFY_LINK,
    );
    app.db.query(
        "UPDATE email_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
    );
    verify(&app, &third)
        .await
        .assert_problem(400, "invalid_email_token");
    assert!(!verified_in_db(&app, "alice"));

    assert_eq!(resend(&app, &access).await.status, 202);
    let fourth = token_from(
        &app.mail("alice@example.org", VERIFY_SUBJECT).await.text,
        VERIFY_LINK,
    );
    assert_eq!(verify(&app, &fourth).await.status, 200);
    assert!(verified_in_db(&app, "alice"));
    resend(&app, &access)
        .await
        .assert_problem(409, "email_already_verified");

    let (_, bob, _) = app.user("bob").await;
    resend(&app, &bob).await.assert_problem(409, "no_email");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM email_outbox WHERE kind = 'verify_email'"),
        4
    );
}

/// Hostile tokens at verify-email are all 400 invalid_email_token: wrong
/// lengths, standard base64's `+` `/` `=`, percent-encoding, surrounding
/// whitespace, a NUL, one character off, a well-formed stranger, and a
/// reset token (the purposes do not mix); a 1 MiB token is 413; duplicate
/// keys, unknown fields and a wrong type are refused as requests. None of
/// it verifies anything or uses the real link up: it works afterwards.
#[tokio::test]
async fn hostile_tokens_verify_nothing() {
    let mut app = mail_app(|_| {}).await;
    let token = app.signup_with_email("alice", "alice@example.org").await;
    let reset = app.reset_token_for("alice", "alice@example.org").await;
    let head = &token[..42];
    let last = token.chars().last().unwrap();
    let one_off = format!("{head}{}", if last == 'A' { 'B' } else { 'A' });
    let percent = format!("%{:02X}{}", token.as_bytes()[0], &token[1..]);
    let hostile = [
        String::new(),
        "x".into(),
        head.to_string(),
        format!("{token}A"),
        format!("{head}+"),
        format!("{head}/"),
        format!("{head}="),
        format!("{token}="),
        percent,
        format!("{token} "),
        format!(" {token}"),
        format!("{token}\n"),
        format!("{token}\u{0}"),
        one_off,
        "A".repeat(43),
        reset.clone(),
    ];
    for bad in &hostile {
        let r = verify(&app, bad).await;
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
        r.assert_problem(400, "invalid_email_token");
    }

    let huge = verify(&app, &"A".repeat(1 << 20)).await;
    huge.assert_problem(413, "payload_too_large");

    let duplicate = app
        .http
        .post(app.url("/api/v1/auth/verify-email"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"token": "{token}", "token": "{token}"}}"#))
        .send()
        .await
        .unwrap();
    let duplicate = reply(duplicate).await;
    duplicate.assert_problem(400, "malformed_request");
    assert!(
        duplicate.body["detail"]
            .as_str()
            .unwrap()
            .contains("duplicate field `token`"),
        "{}",
        duplicate.body
    );
    let unknown = app
        .post(
            "/api/v1/auth/verify-email",
            None,
            json!({"token": token, "email": "mallory@example.org"}),
        )
        .await;
    unknown.assert_problem(400, "unknown_field");
    assert_eq!(unknown.body["field"], "email");
    let typed = app
        .post("/api/v1/auth/verify-email", None, json!({"token": 42}))
        .await;
    typed.assert_problem(422, "invalid_field");
    assert_eq!(typed.body["field"], "token");

    assert!(!verified_in_db(&app, "alice"));
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM email_tokens WHERE used_at IS NOT NULL"),
        0,
        "a refused request used a token up"
    );
    assert_eq!(verify(&app, &token).await.status, 200);
    // The reset link was not used up by its trip to verify-email either.
    assert_eq!(confirm(&app, &reset, NEW_PASSWORD).await.status, 204);
}

// ---------- auth.require_verified_email ----------

/// With `auth.require_verified_email`, signup needs an address (422,
/// field email); a correct password for an unverified account is 403
/// email_not_verified (recorded in the login history), a wrong one stays
/// 401 invalid_credentials; after the link is followed the login succeeds
/// (or after a reset: its link proves the address too). Administrators are
/// exempt.
#[tokio::test]
async fn require_verified_email_holds_logins_until_the_link_is_followed() {
    let mut app = mail_app(|c| c.auth.require_verified_email = true).await;
    let r = app.signup("alice", PASSWORD).await;
    r.assert_problem(422, "invalid_field");
    assert_eq!(r.body["field"], "email");
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 0);

    let token = app.signup_with_email("alice", "alice@example.org").await;
    app.login("alice", "wrong password")
        .await
        .assert_problem(401, "invalid_credentials");
    app.login("alice", PASSWORD)
        .await
        .assert_problem(403, "email_not_verified");
    assert_eq!(
        app.db.count(
            "SELECT count(*) FROM login_history WHERE login = 'alice' AND outcome = 'email_not_verified'"
        ),
        1
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM refresh_tokens"),
        0,
        "a refused login opened a session"
    );

    assert_eq!(verify(&app, &token).await.status, 200);
    let access = access_token(&app, "alice", PASSWORD).await;
    assert_eq!(claims(&access)["email_verified"], true);

    // A reset link proves the address as well as a verification link.
    app.signup_with_email("bob", "bob@example.org").await;
    let reset = app.reset_token_for("bob", "bob@example.org").await;
    assert_eq!(confirm(&app, &reset, NEW_PASSWORD).await.status, 204);
    let access = access_token(&app, "bob", NEW_PASSWORD).await;
    assert_eq!(claims(&access)["email_verified"], true);

    let admin = app.admin("root").await;
    assert_eq!(claims(&admin)["adm"], true);
    assert_eq!(claims(&admin)["email_verified"], false);
}

// ---------- changing the address ----------

/// Changing the address needs the current password (422 without, 401
/// when wrong). With it: 200 with the old address still in force and the
/// new one pending; a link goes to the new address and a notice naming it
/// to the old. Until the link is followed the old address still gets
/// reset links; following it makes the new address the account's,
/// verified, and kills the reset link sent to the old one.
#[tokio::test]
async fn a_new_address_takes_effect_only_when_confirmed() {
    let mut app = mail_app(|_| {}).await;
    let token = app.signup_with_email("alice", "old@example.org").await;
    assert_eq!(verify(&app, &token).await.status, 200);
    let access = access_token(&app, "alice", PASSWORD).await;
    let queued = outbox_rows(&app);

    let r = patch_me(&app, &access, json!({"email": "new@example.org"})).await;
    r.assert_problem(422, "invalid_field");
    assert_eq!(r.body["field"], "password");
    patch_me(
        &app,
        &access,
        json!({"email": "new@example.org", "password": "wrong password"}),
    )
    .await
    .assert_problem(401, "invalid_credentials");
    assert_eq!(outbox_rows(&app), queued);

    let r = patch_me(
        &app,
        &access,
        json!({"email": "new@example.org", "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_schema(&r.body, "Me");
    assert_eq!(r.body["email"], "old@example.org");
    assert_eq!(r.body["email_verified"], true);
    assert_eq!(r.body["pending_email"], "new@example.org");

    let mut mails = app.smtp.next_n(2).await;
    mails.sort_by_key(|m| m.recipient() != "new@example.org");
    let [to_new, to_old] = [&mails[0], &mails[1]];
    assert_eq!(to_new.recipient(), "new@example.org");
    assert_eq!(to_new.subject, VERIFY_SUBJECT);
    let new_token = token_from(&to_new.text, VERIFY_LINK);
    assert_eq!(to_old.recipient(), "old@example.org");
    assert_eq!(to_old.subject, EMAIL_CHANGED_SUBJECT);
    assert!(to_old.text.contains("new@example.org"), "{}", to_old.text);
    assert!(!to_old.text.contains(VERIFY_LINK), "{}", to_old.text);

    let body = me(&app, &access).await;
    assert_eq!(body["email"], "old@example.org");
    assert_eq!(body["pending_email"], "new@example.org");

    // The pending address names no account yet; the old one does.
    let pending = reset_request(&app, json!({"email": "new@example.org"}), None).await;
    assert_eq!(pending.status, 202);
    let old = reset_request(&app, json!({"email": "old@example.org"}), None).await;
    assert_eq!(old.status, 202);
    let reset = token_from(
        &app.mail("old@example.org", RESET_SUBJECT).await.text,
        RESET_LINK,
    );
    app.smtp.none_within(Duration::from_millis(500)).await;

    let ok = verify(&app, &new_token).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        ok.body,
        json!({"email": "new@example.org", "email_verified": true})
    );
    let body = me(&app, &access).await;
    assert_eq!(body["email"], "new@example.org");
    assert_eq!(body["email_verified"], true);
    assert_eq!(body["pending_email"], Value::Null);

    confirm(&app, &reset, NEW_PASSWORD)
        .await
        .assert_problem(400, "invalid_reset_token");
    assert_eq!(app.login("alice", PASSWORD).await.status, 200);
}

/// A later change replaces a pending one (its link dies, the old address
/// is told again); asking for the verified address again cancels the
/// pending change (its link dies, no notice). An account without an
/// address gets only the link, and the address once it is followed.
#[tokio::test]
async fn pending_changes_are_replaced_or_cancelled() {
    let mut app = mail_app(|_| {}).await;
    let token = app.signup_with_email("alice", "old@example.org").await;
    assert_eq!(verify(&app, &token).await.status, 200);
    let access = access_token(&app, "alice", PASSWORD).await;

    let mut links = Vec::new();
    for new in ["one@example.org", "two@example.org"] {
        let r = patch_me(&app, &access, json!({"email": new, "password": PASSWORD})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["pending_email"], new);
        let mut mails = app.smtp.next_n(2).await;
        mails.sort_by_key(|m| m.recipient() != new);
        assert_eq!(mails[0].subject, VERIFY_SUBJECT);
        assert_eq!(mails[1].recipient(), "old@example.org");
        assert_eq!(mails[1].subject, EMAIL_CHANGED_SUBJECT);
        assert!(mails[1].text.contains(new), "{}", mails[1].text);
        links.push(token_from(&mails[0].text, VERIFY_LINK));
    }
    verify(&app, &links[0])
        .await
        .assert_problem(400, "invalid_email_token");
    assert_eq!(me(&app, &access).await["pending_email"], "two@example.org");

    let r = patch_me(
        &app,
        &access,
        json!({"email": "old@example.org", "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["email"], "old@example.org");
    assert_eq!(r.body["email_verified"], true);
    assert_eq!(r.body["pending_email"], Value::Null);
    verify(&app, &links[1])
        .await
        .assert_problem(400, "invalid_email_token");
    assert_eq!(me(&app, &access).await["email"], "old@example.org");

    let (_, bob, _) = app.user("bob").await;
    let r = patch_me(
        &app,
        &bob,
        json!({"email": "bob@example.org", "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["email"], Value::Null);
    assert_eq!(r.body["pending_email"], "bob@example.org");
    let link = token_from(
        &app.mail("bob@example.org", VERIFY_SUBJECT).await.text,
        VERIFY_LINK,
    );
    app.smtp.none_within(Duration::from_millis(500)).await;
    assert_eq!(verify(&app, &link).await.status, 200);
    let body = me(&app, &bob).await;
    assert_eq!(body["email"], "bob@example.org");
    assert_eq!(body["email_verified"], true);
    assert_eq!(body["pending_email"], Value::Null);
}

/// The `email_changed` notice tells the owner of the old address to reset
/// the password if the change was not theirs; the reset must end the
/// intruder's pending change too. Otherwise the intruder, who holds the
/// verification link mailed to their own address, follows it after the
/// reset, the account's address becomes theirs, and their next reset
/// link takes the account back.
#[tokio::test]
async fn a_reset_cancels_a_pending_change_of_address() {
    let mut app = mail_app(|_| {}).await;
    let token = app.signup_with_email("alice", "alice@example.org").await;
    assert_eq!(verify(&app, &token).await.status, 200);

    // An intruder who learnt the password moves the address.
    let intruder = access_token(&app, "alice", PASSWORD).await;
    let r = patch_me(
        &app,
        &intruder,
        json!({"email": "mallory@evil.example", "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut mails = app.smtp.next_n(2).await;
    mails.sort_by_key(|m| m.recipient() != "mallory@evil.example");
    let intruders_link = token_from(&mails[0].text, VERIFY_LINK);
    assert_eq!(mails[1].recipient(), "alice@example.org");
    assert_eq!(mails[1].subject, EMAIL_CHANGED_SUBJECT);

    // Alice does what the notice says: she resets her password.
    let reset = app.reset_token_for("alice", "alice@example.org").await;
    assert_eq!(confirm(&app, &reset, NEW_PASSWORD).await.status, 204);
    app.mail("alice@example.org", CHANGED_SUBJECT).await;

    verify(&app, &intruders_link)
        .await
        .assert_problem(400, "invalid_email_token");
    let access = access_token(&app, "alice", NEW_PASSWORD).await;
    let body = me(&app, &access).await;
    assert_eq!(body["email"], "alice@example.org");
    assert_eq!(body["email_verified"], true);
    assert_eq!(body["pending_email"], Value::Null);
}

/// An address that could smuggle a header (CR LF) or holds spaces is
/// refused with 422 naming `email`, at signup and in PATCH /users/me, and
/// nothing is queued.
#[tokio::test]
async fn addresses_that_could_inject_headers_are_refused() {
    let app = mail_app(|_| {}).await;
    let (_, access, _) = app.user("alice").await;
    let hostile = [
        "a@example.com\r\nBcc: x@evil.example",
        "a@example.com\nBcc: x@evil.example",
        "a@example.com\rBcc: x@evil.example",
        "a b@example.com",
        "a@example.com x@evil.example",
        "a@example.com, x@evil.example",
        "Alice <a@example.com>",
        " a@example.com",
    ];
    for email in hostile {
        let r = patch_me(&app, &access, json!({"email": email, "password": PASSWORD})).await;
        r.assert_problem(422, "invalid_field");
        assert_eq!(r.body["field"], "email", "{email:?}");
        let r = app
            .post(
                "/api/v1/auth/signup",
                None,
                json!({"login": "mallory", "password": PASSWORD, "email": email}),
            )
            .await;
        r.assert_problem(422, "invalid_field");
        assert_eq!(r.body["field"], "email", "{email:?}");
    }
    assert_eq!(outbox_rows(&app), 0);
    assert_eq!(app.db.count("SELECT count(*) FROM email_tokens"), 0);
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 1);
}

/// An address may hold characters that mean something in HTML or to the
/// templates (`'`, `&`, braces): the message is delivered to it, the HTML
/// part escapes it, and no placeholder inside it is expanded.
#[tokio::test]
async fn addresses_with_markup_are_delivered_and_escaped() {
    let mut app = mail_app(|_| {}).await;
    let email = "o'hara&{link}@example.org";
    let token = app.signup_with_email("alice", email).await;
    assert_eq!(verify(&app, &token).await.status, 200);
    let access = access_token(&app, "alice", PASSWORD).await;
    assert_eq!(me(&app, &access).await["email"], email);

    let r = reset_request(&app, json!({ "email": email }), None).await;
    assert_eq!(r.status, 202);
    let mail = app.mail(email, RESET_SUBJECT).await;
    assert_eq!(mail.text.matches(RESET_LINK).count(), 1, "{}", mail.text);

    let r = patch_me(
        &app,
        &access,
        json!({"email": "alice@example.org", "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut mails = app.smtp.next_n(2).await;
    mails.sort_by_key(|m| m.recipient() != email);
    let notice = &mails[0];
    assert_eq!(notice.subject, EMAIL_CHANGED_SUBJECT);
    assert!(notice.text.contains(email), "{}", notice.text);
    assert!(
        notice.html.contains("o&#39;hara&amp;{link}@example.org"),
        "{}",
        notice.html
    );
    assert!(!notice.html.contains(email), "{}", notice.html);
}

/// PATCH {locale} alone needs no password, and the account's language
/// then rules its mail: a reset asked for with `Accept-Language: en`
/// still comes in Russian, and so does the "password changed" notice; a
/// locale given at signup outranks `Accept-Language` the same way. An
/// unknown locale is 422 naming `locale`.
#[tokio::test]
async fn the_account_locale_rules_later_mail() {
    let mut app = mail_app(|_| {}).await;
    app.signup_with_email("alice", "alice@example.org").await;
    let access = access_token(&app, "alice", PASSWORD).await;

    let r = patch_me(&app, &access, json!({"locale": "de"})).await;
    r.assert_problem(422, "invalid_field");
    assert_eq!(r.body["field"], "locale");
    let r = patch_me(&app, &access, json!({"locale": "ru"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_schema(&r.body, "Me");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM users WHERE login = 'alice' AND locale = 'ru'"),
        1
    );

    let r = reset_request(&app, json!({"login": "alice"}), Some("en")).await;
    assert_eq!(r.status, 202);
    let mail = app
        .mail(
            "alice@example.org",
            "Восстановление пароля в сервисе authgw",
        )
        .await;
    assert!(mail.text.contains("30 минут"), "{}", mail.text);
    let token = token_from(&mail.text, RESET_LINK);
    assert_eq!(confirm(&app, &token, NEW_PASSWORD).await.status, 204);

    // The locale given at signup outranks the request's language too.
    let r = post_with(
        &app,
        "/api/v1/auth/signup",
        &[("accept-language", "en")],
        json!({"login": "bob", "password": PASSWORD, "email": "bob@example.org", "locale": "ru"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut mails = app.smtp.next_n(2).await;
    mails.sort_by_key(|m| m.recipient() != "bob@example.org");
    assert_eq!(mails[0].recipient(), "bob@example.org");
    assert_eq!(
        mails[0].subject,
        "Подтвердите адрес электронной почты в сервисе authgw"
    );
    assert_eq!(mails[1].recipient(), "alice@example.org");
    assert_eq!(mails[1].subject, "Пароль в сервисе authgw изменён");
}

// ---------- password reset ----------

/// The whole reset: a user with two sessions, locked out from two
/// addresses by wrong guesses, asks for a link (202) and sets a new
/// password with it. A policy violation (too short, the login) is 422
/// naming new_password and leaves the link usable; a verification token
/// is no reset token. On 204 every session ends (both refresh tokens and
/// the access token refused), the old password stops working, the new one
/// works from both addresses that were locked out, a "password changed"
/// notice arrives, the history records it, the address counts as
/// verified, and the link is spent.
#[tokio::test]
async fn password_reset_replaces_the_password_and_ends_every_session() {
    let mut app = mail_app(|c| {
        c.limits.lockout_threshold = 3;
        c.limits.lockout_base = Duration::from_secs(60);
    })
    .await;
    let login = "alice.smith";
    let verify_token = app.signup_with_email(login, "alice@example.org").await;
    let one = app.login(login, PASSWORD).await;
    let two = app.login(login, PASSWORD).await;
    assert_eq!((one.status.as_u16(), two.status.as_u16()), (200, 200));
    let access = one.body["access_token"].as_str().unwrap().to_string();
    let refresh = [
        one.body["refresh_token"].as_str().unwrap().to_string(),
        two.body["refresh_token"].as_str().unwrap().to_string(),
    ];

    // Locked out from two addresses: this test's and a second device's.
    let phone = client_from("127.0.0.2");
    for i in 0..3 {
        app.login(login, &format!("guess {i}"))
            .await
            .assert_problem(401, "invalid_credentials");
        login_from(&app, &phone, login, &format!("guess {i}"))
            .await
            .assert_problem(401, "invalid_credentials");
    }
    app.login(login, PASSWORD)
        .await
        .assert_problem(429, "too_many_attempts");
    login_from(&app, &phone, login, PASSWORD)
        .await
        .assert_problem(429, "too_many_attempts");

    let r = reset_request(&app, json!({ "login": login }), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_schema(&r.body, "Accepted");
    assert_eq!(r.body["status"], "accepted");
    let mail = app.mail("alice@example.org", RESET_SUBJECT).await;
    assert!(mail.text.contains("Hello, alice.smith!"), "{}", mail.text);
    assert!(mail.text.contains("30 minutes"), "{}", mail.text);
    let token = token_from(&mail.text, RESET_LINK);
    assert_eq!(token_from(&mail.html, RESET_LINK), token);

    confirm(&app, &verify_token, NEW_PASSWORD)
        .await
        .assert_problem(400, "invalid_reset_token");
    for weak in ["short", "ALICE.SMITH"] {
        let r = confirm(&app, &token, weak).await;
        r.assert_problem(422, "invalid_field");
        assert_eq!(r.body["field"], "new_password", "{weak}");
    }
    let r = confirm(&app, &token, NEW_PASSWORD).await;
    assert_eq!(r.status, 204, "{}", r.body);

    for t in &refresh {
        assert_eq!(app.refresh(t).await.status, 401);
    }
    app.get("/api/v1/auth/check", Some(&access))
        .await
        .assert_problem(401, "invalid_token");
    app.login(login, PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    let fresh = access_token(&app, login, NEW_PASSWORD).await;
    let r = login_from(&app, &phone, login, NEW_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(claims(&fresh)["email_verified"], true);
    assert_eq!(me(&app, &fresh).await["email_verified"], true);

    let notice = app.mail("alice@example.org", CHANGED_SUBJECT).await;
    assert!(notice.text.contains("alice.smith"), "{}", notice.text);
    assert!(!notice.text.contains(RESET_LINK), "{}", notice.text);
    assert_eq!(
        app.db.count(
            "SELECT count(*) FROM login_history WHERE login = 'alice.smith' AND outcome = 'password_reset'"
        ),
        1
    );
    confirm(&app, &token, "yet another passphrase")
        .await
        .assert_problem(400, "invalid_reset_token");
    assert_eq!(app.login(login, NEW_PASSWORD).await.status, 200);
}

/// A reset asked for by address (case-insensitively) reaches the account:
/// the link mailed to it sets the password. Accounts sharing an address
/// each get their own link, good for their own account only.
#[tokio::test]
async fn password_reset_by_address_reaches_every_account_with_it() {
    let mut app = mail_app(|_| {}).await;
    app.signup_with_email("alice", "Alice@Example.org").await;
    let r = reset_request(&app, json!({"email": "alice@EXAMPLE.org"}), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let token = token_from(
        &app.mail("Alice@Example.org", RESET_SUBJECT).await.text,
        RESET_LINK,
    );
    assert_eq!(confirm(&app, &token, NEW_PASSWORD).await.status, 204);
    app.mail("Alice@Example.org", CHANGED_SUBJECT).await;
    assert_eq!(app.login("alice", NEW_PASSWORD).await.status, 200);

    app.signup_with_email("carol", "family@example.org").await;
    app.signup_with_email("dave", "family@example.org").await;
    let r = reset_request(&app, json!({"email": "family@example.org"}), None).await;
    assert_eq!(r.status, 202);
    let mails = app.smtp.next_n(2).await;
    let mut links = Vec::new();
    for mail in &mails {
        assert_eq!(mail.recipient(), "family@example.org");
        assert_eq!(mail.subject, RESET_SUBJECT);
        let who = if mail.text.contains("Hello, carol!") {
            "carol"
        } else {
            "dave"
        };
        links.push((who, token_from(&mail.text, RESET_LINK)));
    }
    links.sort();
    assert_eq!(
        links.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
        ["carol", "dave"]
    );
    assert_eq!(
        confirm(&app, &links[0].1, "carol's new passphrase")
            .await
            .status,
        204
    );
    assert_eq!(
        app.login("carol", "carol's new passphrase").await.status,
        200
    );
    assert_eq!(app.login("dave", PASSWORD).await.status, 200);
    assert_eq!(
        confirm(&app, &links[1].1, "dave's new passphrase")
            .await
            .status,
        204
    );
    assert_eq!(app.login("dave", "dave's new passphrase").await.status, 200);
}

/// No enumeration: a reset for an unknown login, an unknown address, an
/// account without an address, a malformed login or address, and a real
/// account are all 202 with byte-identical bodies and the same headers
/// (but Date); only the real account gets mail. Both or neither of login
/// and email is 422.
#[tokio::test]
async fn password_reset_answers_the_same_whether_or_not_the_account_exists() {
    let mut app = mail_app(|_| {}).await;
    app.signup_with_email("alice", "alice@example.org").await;
    app.user("bob").await;

    let bodies = [
        json!({"login": "nobody"}),
        json!({"email": "nobody@example.org"}),
        json!({"login": "bob"}),
        json!({"login": "bad login!"}),
        json!({"login": "x".repeat(200)}),
        json!({"email": "not an address"}),
        json!({"login": "alice", "email": null}),
    ];
    let mut answers = Vec::new();
    for body in &bodies {
        let r = app
            .http
            .post(app.url("/api/v1/auth/password-reset"))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{body}");
        let mut headers = r.headers().clone();
        headers.remove("date");
        let bytes = r.bytes().await.unwrap();
        answers.push((headers, bytes));
    }
    for (i, answer) in answers.iter().enumerate().skip(1) {
        assert_eq!(answer, &answers[0], "{} vs {}", bodies[i], bodies[0]);
    }
    let body: Value = serde_json::from_slice(&answers[0].1).unwrap();
    assert_schema(&body, "Accepted");

    app.mail("alice@example.org", RESET_SUBJECT).await;
    app.smtp.none_within(Duration::from_secs(1)).await;
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM email_outbox WHERE kind = 'password_reset'"),
        1
    );

    for body in [
        json!({"login": "alice", "email": "alice@example.org"}),
        json!({}),
        json!({"login": null, "email": null}),
    ] {
        let r = reset_request(&app, body.clone(), None).await;
        r.assert_problem(422, "invalid_field");
        assert_eq!(r.body["field"], "login", "{body}");
    }
}

/// A newer reset link kills the older one: with no resend interval, two
/// requests mail two links; the first is refused, the second works.
#[tokio::test]
async fn a_newer_reset_link_kills_the_older() {
    let mut app = mail_app(|c| c.email.resend_interval = Duration::ZERO).await;
    app.signup_with_email("alice", "alice@example.org").await;
    let first = app.reset_token_for("alice", "alice@example.org").await;
    // Logins are compared case-insensitively.
    let second = app.reset_token_for("ALICE", "alice@example.org").await;
    assert_ne!(first, second);
    confirm(&app, &first, NEW_PASSWORD)
        .await
        .assert_problem(400, "invalid_reset_token");
    assert_eq!(confirm(&app, &second, NEW_PASSWORD).await.status, 204);
    assert_eq!(app.login("alice", NEW_PASSWORD).await.status, 200);
}

/// A password changed another way (PATCH /users/me/password, which mails
/// a notice) kills the outstanding reset link: it cannot undo the change.
#[tokio::test]
async fn a_password_change_kills_outstanding_reset_links() {
    let mut app = mail_app(|_| {}).await;
    app.signup_with_email("alice", "alice@example.org").await;
    let token = app.reset_token_for("alice", "alice@example.org").await;
    let access = access_token(&app, "alice", PASSWORD).await;
    let r = app
        .send(
            Method::PATCH,
            "/api/v1/users/me/password",
            Some(&access),
            Some(json!({"old_password": PASSWORD, "new_password": NEW_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    app.mail("alice@example.org", CHANGED_SUBJECT).await;
    confirm(&app, &token, "the attacker's passphrase")
        .await
        .assert_problem(400, "invalid_reset_token");
    assert_eq!(app.login("alice", NEW_PASSWORD).await.status, 200);
}

/// An administrator's password set from the CLI (`authgw admin
/// set-password`) kills the reset link mailed to it as well.
#[tokio::test]
async fn a_cli_password_change_kills_an_administrators_reset_link() {
    let mut app = mail_app(|_| {}).await;
    let created = authgw(
        &app.db.url,
        &[
            "admin",
            "create",
            "--login",
            "root",
            "--email",
            "root@example.org",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let token = app.reset_token_for("root", "root@example.org").await;
    let set = authgw(
        &app.db.url,
        &[
            "admin",
            "set-password",
            "--login",
            "root",
            "--password-stdin",
        ],
        Some(&format!("{NEW_PASSWORD}\n")),
    );
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
    confirm(&app, &token, "the attacker's passphrase")
        .await
        .assert_problem(400, "invalid_reset_token");
    assert_eq!(app.login("root", NEW_PASSWORD).await.status, 200);
}

/// Per account, at most one reset message per `email.resend_interval`
/// (60 s by default): a second request right after the first is answered
/// 202 all the same, and sends nothing.
#[tokio::test]
async fn reset_mail_is_limited_per_account() {
    let mut app = mail_app(|_| {}).await;
    app.signup_with_email("alice", "alice@example.org").await;
    for _ in 0..2 {
        let r = reset_request(&app, json!({"login": "alice"}), None).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    app.mail("alice@example.org", RESET_SUBJECT).await;
    app.smtp.none_within(Duration::from_secs(1)).await;
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM email_tokens WHERE purpose = 'reset'"),
        1
    );
}

/// Per client address, reset requests, confirmations and verifications
/// draw from the auth bucket: with a burst of 3 the 4th request is 429
/// rate_limited with Retry-After; another address is unaffected.
#[tokio::test]
async fn recovery_endpoints_are_rate_limited_per_client() {
    let app = spawn_app_with(|c| {
        c.limits.auth_per_minute = 1;
        c.limits.auth_burst = 3;
    })
    .await;
    let greedy = client_from("127.0.0.3");
    let ask = |client: &reqwest::Client, path: &str, body: Value| {
        let req = client.post(app.url(path)).json(&body);
        async move { reply(req.send().await.unwrap()).await }
    };
    for i in 0..3 {
        let r = ask(
            &greedy,
            "/api/v1/auth/password-reset",
            json!({"login": format!("user{i}")}),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let token = "A".repeat(43);
    for (path, body) in [
        ("/api/v1/auth/password-reset", json!({"login": "user4"})),
        (
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "new_password": NEW_PASSWORD}),
        ),
        ("/api/v1/auth/verify-email", json!({ "token": token })),
    ] {
        let r = ask(&greedy, path, body).await;
        r.assert_problem(429, "rate_limited");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1, "{retry}");
    }
    let other = ask(
        &client_from("127.0.0.4"),
        "/api/v1/auth/password-reset",
        json!({"login": "user5"}),
    )
    .await;
    assert_eq!(other.status, 202, "{}", other.body);
}

/// One reset link confirmed by 8 concurrent requests with different
/// passwords: exactly one wins (204), the rest are 400
/// invalid_reset_token; only the winner's password logs in, and the reset
/// happened once.
#[tokio::test]
async fn concurrent_confirmations_of_one_link_have_one_winner() {
    let mut app = mail_app(|c| c.limits.lockout_threshold = 100).await;
    app.signup_with_email("alice", "alice@example.org").await;
    let token = app.reset_token_for("alice", "alice@example.org").await;
    let passwords: Vec<String> = (0..8).map(|i| format!("racing passphrase {i}")).collect();
    let answers =
        futures::future::join_all(passwords.iter().map(|p| confirm(&app, &token, p))).await;
    let winners: Vec<&String> = passwords
        .iter()
        .zip(&answers)
        .filter(|(_, r)| r.status == 204)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    for r in answers.iter().filter(|r| r.status != 204) {
        r.assert_problem(400, "invalid_reset_token");
    }
    for p in &passwords {
        let expected = if p == winners[0] { 200 } else { 401 };
        assert_eq!(app.login("alice", p).await.status, expected, "{p}");
    }
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM login_history WHERE outcome = 'password_reset'"),
        1
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM email_outbox WHERE kind = 'password_changed'"),
        1
    );
}

// ---------- no mail server ----------

/// The `.eml` files in `dir`.
fn eml_files(dir: &Path) -> HashSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for one more `.eml` file in `dir` than `seen` holds, adds it to
/// `seen` and returns it parsed.
async fn next_eml(dir: &Path, seen: &mut HashSet<PathBuf>) -> Mail {
    let mut new = Vec::new();
    eventually("a new .eml file", || {
        new = eml_files(dir).difference(seen).cloned().collect();
        !new.is_empty()
    })
    .await;
    assert_eq!(new.len(), 1, "{new:?}");
    seen.insert(new[0].clone());
    Mail::parse(String::new(), Vec::new(), std::fs::read(&new[0]).unwrap()).unwrap()
}

/// With no `email.smtp_url` (the default), mail is written as `.eml`
/// files into `email.dir`: a new install runs the whole flow with no mail
/// server. Signup writes the verification link; a reset writes the reset
/// link, which sets the password.
#[tokio::test]
async fn without_a_mail_server_messages_are_eml_files() {
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let configured = mail_dir.clone();
    let app = spawn_app_with(move |c| {
        c.email.smtp_url = String::new();
        c.email.dir = configured;
        c.email.poll_interval = Duration::from_millis(200);
    })
    .await;
    let mut seen = HashSet::new();

    let r = app
        .post(
            "/api/v1/auth/signup",
            None,
            json!({"login": "alice", "password": PASSWORD, "email": "alice@example.org"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mail = next_eml(&mail_dir, &mut seen).await;
    assert_eq!(mail.subject, VERIFY_SUBJECT);
    assert!(
        mail.header("to")
            .is_some_and(|t| t.contains("alice@example.org")),
        "{:?}",
        mail.headers
    );
    let token = token_from(&mail.text, VERIFY_LINK);
    assert_eq!(verify(&app, &token).await.status, 200);

    let r = reset_request(&app, json!({"login": "alice"}), None).await;
    assert_eq!(r.status, 202);
    let mail = next_eml(&mail_dir, &mut seen).await;
    assert_eq!(mail.subject, RESET_SUBJECT);
    let token = token_from(&mail.text, RESET_LINK);
    assert_eq!(confirm(&app, &token, NEW_PASSWORD).await.status, 204);
    assert_eq!(app.login("alice", NEW_PASSWORD).await.status, 200);
    let mail = next_eml(&mail_dir, &mut seen).await;
    assert_eq!(mail.subject, CHANGED_SUBJECT);
    assert_eq!(eml_files(&mail_dir).len(), 3);
}

/// Holds `login`'s user lock (the advisory lock every reset of that
/// account takes) on a connection of its own until the returned sender is
/// used or dropped; returns once it is held.
fn hold_user_lock(
    app: &TestApp,
    login: &str,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let user: uuid::Uuid = app
        .db
        .query(&format!("SELECT id FROM users WHERE login = '{login}'"))[0]
        .get(0);
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let url = app.db.url.clone();
    let holder = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('authgw.user:' || $1::uuid::text, 0))",
            &[&user],
        )
        .unwrap();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
        tx.commit().unwrap();
    });
    held_rx.recv().unwrap();
    (release_tx, holder)
}

/// Waits until one statement waits for an advisory lock (a reset's work
/// blocked by [`hold_user_lock`]).
async fn wait_for_lock_waiter(app: &TestApp) {
    for _ in 0..200 {
        if app
            .db
            .count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            == 1
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the first reset never waited for the lock");
}

/// An app with `email.max_pending_resets = max_pending`, alice and bob
/// signed up with addresses, and alice's reset requested (its 202 returned)
/// and waiting for her lock, which the returned sender releases.
async fn alice_reset_waiting_for_her_lock(
    max_pending: usize,
) -> (
    App,
    Reply,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let mut app = mail_app(|c| c.email.max_pending_resets = max_pending).await;
    app.signup_with_email("alice", "alice@example.org").await;
    app.signup_with_email("bob", "bob@example.org").await;
    let (release_tx, holder) = hold_user_lock(&app, "alice");
    let first = reset_request(&app, json!({"login": "alice"}), None).await;
    assert_eq!(first.status, 202);
    wait_for_lock_waiter(&app).await;
    (app, first, release_tx, holder)
}

/// A flood of reset requests cannot pile up work without bound: with
/// `email.max_pending_resets = 1` and the first request's lookup held (its
/// user's lock taken by another connection), a second request gets the
/// same 202 and is dropped (counted in
/// `authgw_password_reset_dropped_total`); the first completes once the
/// lock is released.
#[tokio::test]
async fn reset_work_in_flight_is_bounded() {
    // The first request's work waits for alice's lock, holding the one slot.
    let (mut app, first, release_tx, holder) = alice_reset_waiting_for_her_lock(1).await;
    let second = reset_request(&app, json!({"login": "bob"}), None).await;
    assert_eq!((second.status, &second.body), (first.status, &first.body));
    assert_eq!(app.metric("authgw_password_reset_dropped_total").await, 1.0);
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    app.mail("alice@example.org", RESET_SUBJECT).await;
    app.smtp.none_within(Duration::from_secs(1)).await;
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM email_tokens WHERE purpose = 'reset'"),
        1,
        "bob's request was dropped"
    );
}

/// Reset requests are worked through one at a time, so that a flood of
/// them keeps the server equally busy whether the accounts exist or not
/// (with a task per request, unknown logins' one-query lookups made their
/// 202s 3.9x slower under a flood than a known login's): while alice's
/// reset waits for her lock, bob's, queued behind it, is not looked at;
/// once the lock is released both links are mailed.
#[tokio::test]
async fn resets_are_worked_through_one_at_a_time() {
    let (mut app, first, release_tx, holder) = alice_reset_waiting_for_her_lock(4).await;
    let second = reset_request(&app, json!({"login": "bob"}), None).await;
    assert_eq!((second.status, &second.body), (first.status, &first.body));
    // Absence over a window: a worker of its own would issue bob's link in
    // a few milliseconds.
    let tokens = "SELECT count(*) FROM email_tokens WHERE purpose = 'reset'";
    for _ in 0..20 {
        assert_eq!(app.db.count(tokens), 0, "bob's reset ran beside alice's");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    app.mail("alice@example.org", RESET_SUBJECT).await;
    app.mail("bob@example.org", RESET_SUBJECT).await;
    assert_eq!(app.db.count(tokens), 2);
    assert_eq!(app.metric("authgw_password_reset_dropped_total").await, 0.0);
}
