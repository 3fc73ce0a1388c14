//! Admin-only handlers: roles, users, audit log. Every mutation goes through
//! `crate::admin`, which writes the audit row in the same transaction.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{UserBody, page_limit};
use super::extract::{Admin, JsonBody, Params};
use super::{AppState, list, page_of};
use crate::admin;
use crate::error::{Error, Result};
use crate::store::audit::{self, AuditFilter};
use crate::store::roles::{self, Role};
use crate::store::users::{self, UserFilter};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/roles", get(list_roles).post(create_role))
        .route(
            "/api/v1/roles/{name}",
            get(get_role).patch(update_role).delete(delete_role),
        )
        .route("/api/v1/users", get(list_users))
        .route("/api/v1/users/{id}", get(get_user).delete(delete_user))
        .route("/api/v1/users/{id}/roles", get(user_roles))
        .route(
            "/api/v1/users/{id}/roles/{name}",
            put(grant_role).delete(revoke_role),
        )
        .route("/api/v1/users/{id}/logout-all", post(logout_user))
        .route("/api/v1/users/{id}/mfa", delete(reset_mfa))
        .route("/api/v1/users/{id}/identities", get(user_identities))
        .route(
            "/api/v1/users/{id}/identities/{provider}",
            delete(unlink_identity),
        )
        .route("/api/v1/audit", get(list_audit))
}

#[derive(Serialize)]
struct RoleBody {
    name: String,
    description: String,
    created_at: DateTime<Utc>,
}

impl From<Role> for RoleBody {
    fn from(r: Role) -> Self {
        Self {
            name: r.name,
            description: r.description,
            created_at: r.created_at,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleCreateRequest {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleUpdateRequest {
    description: String,
}

fn validate_description(d: &str) -> Result<()> {
    if d.len() > 1024 {
        return Err(Error::invalid("description", "must be at most 1024 bytes"));
    }
    Ok(())
}

fn user_id(raw: &str) -> Result<Uuid> {
    Uuid::parse_str(raw).map_err(|_| Error::NotFound {
        what: "user",
        name: raw.to_string(),
    })
}

async fn list_roles(State(s): State<AppState>, _: Admin) -> Result<Response> {
    let items: Vec<RoleBody> = s
        .auth
        .db
        .run(roles::list)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(list(items))
}

async fn create_role(
    State(s): State<AppState>,
    Admin(a): Admin,
    JsonBody(req): JsonBody<RoleCreateRequest>,
) -> Result<Response> {
    let description = req.description.unwrap_or_default();
    roles::validate_name(&req.name)?;
    validate_description(&description)?;
    let role = s
        .auth
        .db
        .run(move |c| admin::create_role(c, &a.login, &req.name, &description))
        .await?;
    Ok((StatusCode::CREATED, Json(RoleBody::from(role))).into_response())
}

async fn get_role(
    State(s): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<RoleBody>> {
    Ok(Json(
        s.auth.db.run(move |c| roles::get(c, &name)).await?.into(),
    ))
}

async fn update_role(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<RoleUpdateRequest>,
) -> Result<Json<RoleBody>> {
    validate_description(&req.description)?;
    let role = s
        .auth
        .db
        .run(move |c| admin::update_role(c, &a.login, &name, &req.description))
        .await?;
    Ok(Json(role.into()))
}

async fn delete_role(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    s.auth
        .db
        .run(move |c| admin::delete_role(c, &a.login, &name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserListParams {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    login_prefix: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

async fn list_users(
    State(s): State<AppState>,
    _: Admin,
    Params(p): Params<UserListParams>,
) -> Result<Response> {
    let filter = UserFilter {
        login_prefix: p.login_prefix,
        role: p.role,
        admins_only: false,
        cursor: p.cursor,
        limit: page_limit(p.limit, 50)?,
    };
    let page = s.auth.db.run(move |c| users::list(c, &filter)).await?;
    let items: Vec<UserBody> = page.items.into_iter().map(Into::into).collect();
    Ok(page_of(items, page.next_cursor))
}

async fn get_user(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<UserBody>> {
    let id = user_id(&id)?;
    Ok(Json(
        s.auth
            .db
            .run(move |c| admin::require_user(c, id))
            .await?
            .into(),
    ))
}

async fn delete_user(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = user_id(&id)?;
    s.auth
        .revoking(move |c, lifetime| admin::delete_user(c, &a.login, id, lifetime))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct UserRoleBody {
    name: String,
    description: String,
    granted_at: DateTime<Utc>,
}

async fn user_roles(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = user_id(&id)?;
    let held = s
        .auth
        .db
        .run(move |c| {
            admin::require_user(c, id)?;
            roles::of_user(c, id)
        })
        .await?;
    let items: Vec<UserRoleBody> = held
        .into_iter()
        .map(|r| UserRoleBody {
            name: r.name,
            description: r.description,
            granted_at: r.granted_at,
        })
        .collect();
    Ok(list(items))
}

async fn set_role(
    s: AppState,
    actor: String,
    id: String,
    role: String,
    grant: bool,
) -> Result<StatusCode> {
    let id = user_id(&id)?;
    s.auth
        .db
        .run(move |c| {
            let user = admin::require_user(c, id)?;
            admin::set_role(c, &actor, &user, &role, grant)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn grant_role(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path((id, role)): Path<(String, String)>,
) -> Result<StatusCode> {
    set_role(s, a.login, id, role, true).await
}

async fn revoke_role(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path((id, role)): Path<(String, String)>,
) -> Result<StatusCode> {
    set_role(s, a.login, id, role, false).await
}

async fn logout_user(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = user_id(&id)?;
    s.auth
        .revoking(move |c, lifetime| admin::logout_user(c, &a.login, id, lifetime))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a user's lost TOTP factor and recovery codes (audited).
async fn reset_mfa(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path(id): Path<String>,
) -> Result<Json<UserBody>> {
    let id = user_id(&id)?;
    let mail = s.auth.mail.clone();
    let user = s
        .auth
        .db
        .run(move |c| admin::reset_mfa(c, &a.login, id, Some(mail.as_ref())))
        .await?;
    s.auth.mail.wake();
    Ok(Json(user.into()))
}

/// A user's linked identities.
async fn user_identities(
    State(s): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = user_id(&id)?;
    let items: Vec<super::federation::IdentityBody> = s
        .auth
        .db
        .run(move |c| {
            admin::require_user(c, id)?;
            crate::store::identities::list(c, id)
        })
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(list(items))
}

/// Unlinks a user's identity (audited).
async fn unlink_identity(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path((id, provider)): Path<(String, String)>,
) -> Result<StatusCode> {
    let id = user_id(&id)?;
    s.auth
        .db
        .run(move |c| admin::unlink_identity(c, &a.login, id, &provider))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    action: Option<String>,
}

#[derive(Serialize)]
struct AuditBody {
    id: i64,
    actor: String,
    action: String,
    target: String,
    details: serde_json::Value,
    at: DateTime<Utc>,
}

async fn list_audit(
    State(s): State<AppState>,
    _: Admin,
    Params(p): Params<AuditParams>,
) -> Result<Response> {
    let filter = AuditFilter {
        actor: p.actor,
        action: p.action,
        cursor: p.cursor,
        limit: page_limit(p.limit, 50)?,
    };
    let page = s.auth.db.run(move |c| audit::page(c, &filter)).await?;
    let items: Vec<AuditBody> = page
        .items
        .into_iter()
        .map(|e| AuditBody {
            id: e.id,
            actor: e.actor,
            action: e.action,
            target: e.target,
            details: e.details,
            at: e.at,
        })
        .collect();
    Ok(page_of(items, page.next_cursor))
}
