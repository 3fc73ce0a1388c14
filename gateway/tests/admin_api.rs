//! Roles and user administration: the admin-only HTTP API, its audit rows,
//! and the CLI mirrors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// Every admin route answers 401 without a token and 403 to an ordinary user.
#[tokio::test]
async fn admin_routes_need_an_admin() {
    let app = spawn_app().await;
    let (id, user, _) = app.user("alice").await;
    let routes = [
        (Method::GET, "/api/v1/roles".to_string(), None),
        (
            Method::POST,
            "/api/v1/roles".to_string(),
            Some(json!({"name": "x"})),
        ),
        (Method::GET, "/api/v1/roles/x".to_string(), None),
        (
            Method::PATCH,
            "/api/v1/roles/x".to_string(),
            Some(json!({"description": "d"})),
        ),
        (Method::DELETE, "/api/v1/roles/x".to_string(), None),
        (Method::GET, "/api/v1/users".to_string(), None),
        (Method::GET, format!("/api/v1/users/{id}"), None),
        (Method::DELETE, format!("/api/v1/users/{id}"), None),
        (Method::GET, format!("/api/v1/users/{id}/roles"), None),
        (Method::PUT, format!("/api/v1/users/{id}/roles/x"), None),
        (Method::DELETE, format!("/api/v1/users/{id}/roles/x"), None),
        (Method::POST, format!("/api/v1/users/{id}/logout-all"), None),
        (Method::GET, "/api/v1/audit".to_string(), None),
    ];
    for (method, path, body) in routes {
        let anon = app.send(method.clone(), &path, None, body.clone()).await;
        anon.assert_problem(401, "invalid_token");
        let bad = app
            .send(method.clone(), &path, Some("garbage"), body.clone())
            .await;
        bad.assert_problem(401, "invalid_token");
        let r = app.send(method.clone(), &path, Some(&user), body).await;
        r.assert_problem(403, "forbidden");
    }
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 1);
    assert_eq!(app.db.count("SELECT count(*) FROM audit_log"), 0);
}

/// Role CRUD: create (201, 409 on a duplicate, 422 on a bad name), get,
/// update, list, delete (removed from every user); 404 naming the role.
#[tokio::test]
async fn roles_crud() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let (id, _, _) = app.user("alice").await;
    let created = app
        .post(
            "/api/v1/roles",
            Some(&admin),
            json!({"name": "subscriber", "description": "paid plan"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_schema(&created.body, "Role");
    assert_eq!(created.body["description"], "paid plan");
    let dup = app
        .post("/api/v1/roles", Some(&admin), json!({"name": "subscriber"}))
        .await;
    dup.assert_problem(409, "role_exists");
    for bad in ["Subscriber", "", "has space", &"x".repeat(65)] {
        let r = app
            .post("/api/v1/roles", Some(&admin), json!({"name": bad}))
            .await;
        r.assert_problem(422, "invalid_field");
        assert_eq!(r.body["field"], "name");
    }
    let no_desc = app
        .post("/api/v1/roles", Some(&admin), json!({"name": "trial"}))
        .await;
    assert_eq!(no_desc.body["description"], "");
    let got = app.get("/api/v1/roles/subscriber", Some(&admin)).await;
    assert_eq!(got.body["name"], "subscriber");
    let patched = app
        .send(
            Method::PATCH,
            "/api/v1/roles/trial",
            Some(&admin),
            Some(json!({"description": "14 days"})),
        )
        .await;
    assert_eq!(patched.status, 200);
    assert_eq!(patched.body["description"], "14 days");
    let list = app.get("/api/v1/roles", Some(&admin)).await;
    assert_schema(&list.body, "RoleList");
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["subscriber", "trial"]);
    let missing = app.get("/api/v1/roles/adult", Some(&admin)).await;
    missing.assert_problem(404, "not_found");
    assert!(missing.body["detail"].as_str().unwrap().contains("'adult'"));
    app.send(
        Method::PATCH,
        "/api/v1/roles/adult",
        Some(&admin),
        Some(json!({"description": "x"})),
    )
    .await
    .assert_problem(404, "not_found");
    // Deleting a held role removes it from the user.
    let grant = app
        .send(
            Method::PUT,
            &format!("/api/v1/users/{id}/roles/subscriber"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(grant.status, 204);
    let del = app
        .send(
            Method::DELETE,
            "/api/v1/roles/subscriber",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(del.status, 204);
    assert_eq!(app.db.count("SELECT count(*) FROM user_roles"), 0);
    app.send(
        Method::DELETE,
        "/api/v1/roles/subscriber",
        Some(&admin),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    let actions: Vec<String> = app
        .db
        .query("SELECT action FROM audit_log ORDER BY id")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        actions,
        [
            "admin.create",
            "role.create",
            "role.create",
            "role.update",
            "user.role.grant",
            "role.delete"
        ]
    );
    let actor: String = app
        .db
        .query("SELECT actor FROM audit_log WHERE action = 'role.delete'")[0]
        .get(0);
    assert_eq!(actor, "root");
}

/// Grant and revoke are idempotent 204s; unknown users and roles are 404s
/// naming which; a granted role shows in /check after a refresh.
#[tokio::test]
async fn grant_revoke_and_propagation() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let (id, access, refresh) = app.user("alice").await;
    app.post("/api/v1/roles", Some(&admin), json!({"name": "adult"}))
        .await;
    let path = format!("/api/v1/users/{id}/roles/adult");
    for _ in 0..2 {
        assert_eq!(
            app.send(Method::PUT, &path, Some(&admin), None)
                .await
                .status,
            204
        );
    }
    assert_eq!(app.db.count("SELECT count(*) FROM user_roles"), 1);
    let roles = app
        .get(&format!("/api/v1/users/{id}/roles"), Some(&admin))
        .await;
    assert_schema(&roles.body, "UserRoleList");
    assert_eq!(roles.body["items"][0]["name"], "adult");
    // The old access token still carries the old roles; a refresh brings the new one.
    assert_eq!(
        app.get("/api/v1/auth/check", Some(&access)).await.body["roles"],
        json!([])
    );
    let fresh = app.refresh(&refresh).await;
    let token = fresh.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        app.get("/api/v1/auth/check", Some(&token)).await.body["roles"],
        json!(["adult"])
    );
    let unknown_role = app
        .send(
            Method::PUT,
            &format!("/api/v1/users/{id}/roles/nope"),
            Some(&admin),
            None,
        )
        .await;
    unknown_role.assert_problem(404, "not_found");
    assert!(
        unknown_role.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("role 'nope'")
    );
    let ghost = uuid::Uuid::new_v4();
    let unknown_user = app
        .send(
            Method::PUT,
            &format!("/api/v1/users/{ghost}/roles/adult"),
            Some(&admin),
            None,
        )
        .await;
    unknown_user.assert_problem(404, "not_found");
    assert!(
        unknown_user.body["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("user '{ghost}'"))
    );
    app.get("/api/v1/users/not-a-uuid/roles", Some(&admin))
        .await
        .assert_problem(404, "not_found");
    for _ in 0..2 {
        assert_eq!(
            app.send(Method::DELETE, &path, Some(&admin), None)
                .await
                .status,
            204
        );
    }
    assert_eq!(app.db.count("SELECT count(*) FROM user_roles"), 0);
    let audit = app.db.query(
        "SELECT action, target, details FROM audit_log WHERE action LIKE 'user.role.%' ORDER BY id",
    );
    assert_eq!(audit.len(), 4);
    let details: Value = audit[0].get(2);
    assert_eq!(details["role"], "adult");
    assert_eq!(details["changed"], true);
    let second: Value = audit[1].get(2);
    assert_eq!(second["changed"], false);
    assert_eq!(audit[0].get::<_, String>(1), id);
}

/// User listing: roles included, login_prefix and role filters, cursor pagination.
#[tokio::test]
async fn users_list_filters_and_pages() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    for login in ["anna", "andy", "bert", "Anton"] {
        app.signup(login, PASSWORD).await;
    }
    app.post("/api/v1/roles", Some(&admin), json!({"name": "trial"}))
        .await;
    let andy = app
        .get("/api/v1/users?login_prefix=andy", Some(&admin))
        .await;
    let andy_id = andy.body["items"][0]["id"].as_str().unwrap().to_string();
    app.send(
        Method::PUT,
        &format!("/api/v1/users/{andy_id}/roles/trial"),
        Some(&admin),
        None,
    )
    .await;
    let all = app.get("/api/v1/users", Some(&admin)).await;
    assert_schema(&all.body, "UserPage");
    let logins = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["login"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(logins(&all.body), ["andy", "anna", "Anton", "bert", "root"]);
    assert_eq!(
        logins(
            &app.get("/api/v1/users?login_prefix=AN", Some(&admin))
                .await
                .body
        ),
        ["andy", "anna", "Anton"]
    );
    let trial = app.get("/api/v1/users?role=trial", Some(&admin)).await;
    assert_eq!(logins(&trial.body), ["andy"]);
    assert_eq!(trial.body["items"][0]["roles"], json!(["trial"]));
    let p1 = app.get("/api/v1/users?limit=2", Some(&admin)).await;
    assert_eq!(logins(&p1.body), ["andy", "anna"]);
    let cursor = p1.body["next_cursor"].as_str().unwrap().to_string();
    let p2 = app
        .get(
            &format!("/api/v1/users?limit=2&cursor={cursor}"),
            Some(&admin),
        )
        .await;
    assert_eq!(logins(&p2.body), ["Anton", "bert"]);
    let c2 = p2.body["next_cursor"].as_str().unwrap().to_string();
    let p3 = app
        .get(&format!("/api/v1/users?limit=2&cursor={c2}"), Some(&admin))
        .await;
    assert_eq!(logins(&p3.body), ["root"]);
    assert_eq!(p3.body["next_cursor"], Value::Null);
    app.get("/api/v1/users?limit=0", Some(&admin))
        .await
        .assert_problem(422, "invalid_field");
    app.get("/api/v1/users?sort=login", Some(&admin))
        .await
        .assert_problem(400, "unknown_field");
    let one = app
        .get(&format!("/api/v1/users/{andy_id}"), Some(&admin))
        .await;
    assert_schema(&one.body, "User");
    assert_eq!(one.body["roles"], json!(["trial"]));
    app.get(
        &format!("/api/v1/users/{}", uuid::Uuid::new_v4()),
        Some(&admin),
    )
    .await
    .assert_problem(404, "not_found");
}

/// Deleting a user: ordinary users go (tokens revoked at once, audited);
/// an administrator cannot be deleted over HTTP.
#[tokio::test]
async fn admin_deletes_ordinary_users_only() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let root_id = app.get("/api/v1/users/me", Some(&admin)).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (id, access, _) = app.user("alice").await;
    let r = app
        .send(
            Method::DELETE,
            &format!("/api/v1/users/{root_id}"),
            Some(&admin),
            None,
        )
        .await;
    r.assert_problem(403, "forbidden");
    let ok = app
        .send(
            Method::DELETE,
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(ok.status, 204);
    app.get("/api/v1/auth/check", Some(&access))
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 1);
    app.send(
        Method::DELETE,
        &format!("/api/v1/users/{id}"),
        Some(&admin),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    let audit = app
        .db
        .query("SELECT actor, target FROM audit_log WHERE action = 'user.delete'");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].get::<_, String>(0), "root");
    assert_eq!(audit[0].get::<_, String>(1), id);
}

/// An admin's logout-all of a user ends every session at once.
#[tokio::test]
async fn admin_logout_all_of_a_user() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let (id, a1, r1) = app.user("alice").await;
    let (a2, _) = app.tokens("alice").await;
    let r = app
        .send(
            Method::POST,
            &format!("/api/v1/users/{id}/logout-all"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    for t in [&a1, &a2] {
        app.get("/api/v1/auth/check", Some(t))
            .await
            .assert_problem(401, "invalid_token");
    }
    app.refresh(&r1)
        .await
        .assert_problem(401, "invalid_refresh_token");
    assert_eq!(
        app.get("/api/v1/auth/check", Some(&admin)).await.status,
        200
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM audit_log WHERE action = 'user.logout_all'"),
        1
    );
    let ghost = uuid::Uuid::new_v4();
    app.send(
        Method::POST,
        &format!("/api/v1/users/{ghost}/logout-all"),
        Some(&admin),
        None,
    )
    .await
    .assert_problem(404, "not_found");
}

/// The audit log lists admin actions newest first, filtered by actor and action, paginated.
#[tokio::test]
async fn audit_log_listing() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    for name in ["a", "b", "c"] {
        app.post("/api/v1/roles", Some(&admin), json!({"name": name}))
            .await;
    }
    app.send(Method::DELETE, "/api/v1/roles/a", Some(&admin), None)
        .await;
    let all = app.get("/api/v1/audit", Some(&admin)).await;
    assert_schema(&all.body, "AuditPage");
    let actions: Vec<&str> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "role.delete",
            "role.create",
            "role.create",
            "role.create",
            "admin.create"
        ]
    );
    let creates = app
        .get("/api/v1/audit?action=role.create&limit=2", Some(&admin))
        .await;
    let targets: Vec<&str> = creates.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["c", "b"]);
    let cursor = creates.body["next_cursor"].as_str().unwrap().to_string();
    let rest = app
        .get(
            &format!("/api/v1/audit?action=role.create&limit=2&cursor={cursor}"),
            Some(&admin),
        )
        .await;
    assert_eq!(rest.body["items"][0]["target"], "a");
    assert_eq!(rest.body["next_cursor"], Value::Null);
    let by_cli = app.get("/api/v1/audit?actor=cli:test", Some(&admin)).await;
    assert_eq!(by_cli.body["items"].as_array().unwrap().len(), 1);
}

fn out(o: &Output) -> (i32, String, String) {
    (o.status.code().unwrap_or(-1), stdout(o), stderr(o))
}

/// The CLI mirrors: roles list/create/delete/grant/revoke and users list, with
/// the same validation, one-line errors, and `cli:<os user>` audit rows.
#[tokio::test]
async fn cli_mirrors() {
    let app = spawn_app().await;
    app.signup("alice", PASSWORD).await;
    let url = app.db.url.clone();
    let run = move |args: &[&str]| out(&authgw(&url, args, None));
    let (code, _, err) = run(&["roles", "create", "subscriber", "--description", "paid"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["roles", "create", "subscriber"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "error: role 'subscriber' already exists\n")
    );
    let (code, _, err) = run(&["roles", "create", "Bad Name"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: name: role name") && err.lines().count() == 1,
        "{err}"
    );
    run(&["roles", "create", "adult"]);
    assert_eq!(run(&["roles", "list"]).1, "adult\t\nsubscriber\tpaid\n");
    assert_eq!(
        run(&["roles", "grant", "--login", "ALICE", "--role", "adult"]).0,
        0
    );
    let (code, _, err) = run(&["roles", "grant", "--login", "nobody", "--role", "adult"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "error: user 'nobody' not found\n")
    );
    let (code, _, err) = run(&["roles", "grant", "--login", "alice", "--role", "nope"]);
    assert_eq!((code, err.as_str()), (1, "error: role 'nope' not found\n"));
    let (_, users, _) = run(&["users", "list", "--role", "adult"]);
    assert!(
        users.starts_with("alice\t") && users.contains("\tuser\tadult\tmfa=off\temail="),
        "{users}"
    );
    assert_eq!(
        run(&["roles", "revoke", "--login", "alice", "--role", "adult"]).0,
        0
    );
    assert_eq!(run(&["users", "list", "--role", "adult"]).1, "");
    assert_eq!(run(&["roles", "delete", "adult"]).0, 0);
    let (code, _, err) = run(&["roles", "delete", "adult"]);
    assert_eq!((code, err.as_str()), (1, "error: role 'adult' not found\n"));
    let actors: Vec<(String, String)> = app
        .db
        .query("SELECT actor, action FROM audit_log ORDER BY id")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [
        "role.create",
        "role.create",
        "user.role.grant",
        "user.role.revoke",
        "role.delete",
    ];
    assert_eq!(actors.len(), expected.len(), "{actors:?}");
    for ((actor, action), want) in actors.iter().zip(expected) {
        assert_eq!(actor, "cli:tester");
        assert_eq!(action, want);
    }
}

/// No HTTP endpoint makes an administrator: there is no field or route for
/// it, so is_admin only changes from the CLI.
#[tokio::test]
async fn no_endpoint_makes_an_admin() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let (id, _, _) = app.user("alice").await;
    let attempts = [
        (
            Method::POST,
            "/api/v1/auth/signup".to_string(),
            json!({"login": "eve", "password": PASSWORD, "is_admin": true}),
        ),
        (
            Method::PATCH,
            "/api/v1/roles/admin".to_string(),
            json!({"description": "x", "is_admin": true}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{id}"),
            json!({"is_admin": true}),
        ),
        (Method::PUT, format!("/api/v1/users/{id}/admin"), json!({})),
    ];
    for (method, path, body) in attempts {
        let r = app.send(method, &path, Some(&admin), Some(body)).await;
        assert!(
            matches!(r.status.as_u16(), 400 | 404 | 405),
            "{path}: {}",
            r.status
        );
    }
    assert_eq!(app.db.count("SELECT count(*) FROM users WHERE is_admin"), 1);
}
