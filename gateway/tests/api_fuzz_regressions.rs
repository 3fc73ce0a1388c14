//! Regressions found by Schemathesis (scripts/schemathesis.sh) against the
//! real server. Each test names what was found.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

/// Found by Schemathesis: a login containing NUL (`"\u0000"`) reached
/// PostgreSQL, which refuses NUL in text with an error, and the API answered
/// 500. A NUL in a request string that is stored or looked up as text (JSON
/// body, form body, query string) is now a 422 naming the field, before it
/// reaches the database.
#[tokio::test]
async fn nul_in_request_strings_is_422_not_500() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;

    let login = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"login": "al\u{0}ice", "password": PASSWORD}),
        )
        .await;
    login.assert_problem(422, "invalid_field");
    assert_eq!(login.body["field"], "login");

    let signup = app
        .post(
            "/api/v1/auth/signup",
            None,
            json!({"login": "alice", "password": PASSWORD, "email": "a\u{0}@example.org"}),
        )
        .await;
    signup.assert_problem(422, "invalid_field");
    assert_eq!(signup.body["field"], "email");

    let role = app
        .post(
            "/api/v1/roles",
            Some(&admin),
            json!({"name": "subscriber", "description": "paid\u{0}"}),
        )
        .await;
    role.assert_problem(422, "invalid_field");
    assert_eq!(role.body["field"], "description");

    for (path, field) in [
        ("/api/v1/users?login_prefix=a%00", "login_prefix"),
        ("/api/v1/users?role=%00", "role"),
        ("/api/v1/audit?actor=cli%00", "actor"),
        ("/api/v1/audit?action=%00x", "action"),
        ("/api/v1/users/me/history?cursor=%00", "cursor"),
    ] {
        let r = app.get(path, Some(&admin)).await;
        r.assert_problem(422, "invalid_field");
        assert_eq!(r.body["field"], field, "{path}");
    }

    // Passwords and tokens never reach the database as text: any character
    // goes (found by the next Schemathesis run, when they were refused too).
    let nul_password = format!("{PASSWORD}\u{0}");
    let signup = app.signup("bob", &nul_password).await;
    assert_eq!(signup.status, 201, "{}", signup.body);
    assert_eq!(app.login("bob", &nul_password).await.status, 200);
    let form = app
        .http
        .post(app.url("/api/v1/auth/introspect"))
        .basic_auth(INTROSPECTION_CLIENT, Some(INTROSPECTION_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=%00")
        .send()
        .await
        .unwrap();
    let form = reply(form).await;
    assert_eq!(form.status, 200);
    assert_eq!(form.body, json!({"active": false}));
    let refresh = app.refresh("\u{0}").await;
    refresh.assert_problem(401, "invalid_refresh_token");

    // Nothing of it reached the database; text without NUL still works.
    assert_eq!(app.db.count("SELECT count(*) FROM login_history"), 2);
    let r = app
        .get("/api/v1/users?login_prefix=%C3%BC", Some(&admin))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Found while fixing the above (the same database refusal): a role name in
/// the path with NUL made the role routes answer 500. A name that is not a
/// valid role name names no role: 404, without asking the database; a NUL
/// in the path is refused before routing (400 `invalid_path`).
#[tokio::test]
async fn invalid_role_names_in_paths_are_404() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let (id, _, _) = app.user("alice").await;
    for name in ["%00", "a%00b", "UPPER", "%C3%BC"] {
        for (method, path, body) in [
            (Method::GET, format!("/api/v1/roles/{name}"), None),
            (
                Method::PATCH,
                format!("/api/v1/roles/{name}"),
                Some(json!({"description": "d"})),
            ),
            (Method::DELETE, format!("/api/v1/roles/{name}"), None),
            (
                Method::PUT,
                format!("/api/v1/users/{id}/roles/{name}"),
                None,
            ),
            (
                Method::DELETE,
                format!("/api/v1/users/{id}/roles/{name}"),
                None,
            ),
        ] {
            let r = app.send(method.clone(), &path, Some(&admin), body).await;
            if name.contains("%00") {
                // NUL never reaches a route: the canonical request target
                // refuses it first (issue 13 §1).
                r.assert_problem(400, "invalid_path");
            } else {
                r.assert_problem(404, "not_found");
            }
        }
    }
}

/// Found by Schemathesis: password length was counted in bytes, the document
/// (`minLength`/`maxLength`, which count characters) in characters, so a
/// 7-character password of 2-byte characters was accepted against the
/// document. New passwords are now 8 to 1024 characters, as documented.
#[tokio::test]
async fn password_length_counts_characters() {
    let app = spawn_app().await;
    let short = app.signup("alice", &"é".repeat(7)).await;
    short.assert_problem(422, "invalid_field");
    assert_eq!(short.body["field"], "password");
    assert_eq!(app.signup("alice", &"é".repeat(8)).await.status, 201);
    let long = "é".repeat(1024); // 2048 bytes: still a valid password
    assert_eq!(app.signup("bob", &long).await.status, 201);
    assert_eq!(app.login("bob", &long).await.status, 200);
    let too_long = app.signup("carol", &"p".repeat(1025)).await;
    too_long.assert_problem(422, "invalid_field");
}

/// Found by Schemathesis: `PATCH /api/v1/users/me` with the body `[null,
/// null]` answered 200, because serde reads a struct from an array by
/// position; `["alice", "<password>"]` would have been a signup. Every body
/// is an object: an array is 400 `malformed_request`, and nothing changes.
#[tokio::test]
async fn array_bodies_are_refused_not_read_by_position() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("bob").await;
    let signup = app
        .post("/api/v1/auth/signup", None, json!(["alice", PASSWORD]))
        .await;
    signup.assert_problem(400, "malformed_request");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM users WHERE login = 'alice'"),
        0
    );
    let patch = app
        .send(
            Method::PATCH,
            "/api/v1/users/me",
            Some(&access),
            Some(json!([null, null])),
        )
        .await;
    patch.assert_problem(400, "malformed_request");
    let login = app
        .post("/api/v1/auth/login", None, json!(["bob", PASSWORD]))
        .await;
    login.assert_problem(400, "malformed_request");
}
