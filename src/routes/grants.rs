//! Grant authentication's routes (PROTOCOL-0.17.md §9): sign-up with a signup grant, the exchange of a
//! grant and its proof for a bearer (and every refresh), inspecting and ending that session, and the
//! user's own grant management. They ignore the tenant: the user comes from the grant or the bearer.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use homestead_backends::metadata::{GrantRecord, MintBearer, MintOutcome, NewGrant};
use homestead_config::SignupMode;
use homestead_middleware::query::Query;
use homestead_middleware::{Authentication, Principal};
use http::{StatusCode, Uri, header};
use pubky_common::auth::grant::GrantClaims;
use pubky_common::auth::jws::RandomId;
use serde::Serialize;

use crate::grant_proof::{
    GrantProof, capability_list, check_signup_grant, new_bearer, root_required, verify_grant,
    verify_grant_signature, verify_pop,
};
use crate::http_error::HttpError;
use crate::lookups::unix_seconds;
use crate::routes::AppState;
use crate::routes::auth::create_account;
use crate::session_cookie::secret_hash;
use crate::signup_token;

/// The longest life of a bearer, in seconds (it also ends with its grant).
const BEARER_LIFETIME_SECS: u64 = 3600;

/// A session as the grant routes describe it (field order is the wire order).
#[derive(Debug, Serialize)]
struct SessionJson<'a> {
    homeserver: String,
    pubky: &'a str,
    client_id: &'a str,
    capabilities: Vec<String>,
    grant_id: &'a str,
    token_expires_at: u64,
    grant_expires_at: u64,
    created_at: u64,
}

/// `POST /auth/grant/session`'s answer.
#[derive(Debug, Serialize)]
struct Exchanged<'a> {
    token: &'a str,
    session: SessionJson<'a>,
}

/// One entry of `GET /auth/grant/sessions`.
#[derive(Debug, Serialize)]
struct GrantJson<'a> {
    grant_id: &'a str,
    client_id: &'a str,
    capabilities: &'a str,
    issued_at: i64,
    expires_at: i64,
}

fn now() -> u64 {
    u64::try_from(unix_seconds()).unwrap_or(0)
}

fn as_column(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

fn as_seconds(column: i64) -> u64 {
    u64::try_from(column).unwrap_or(0)
}

/// A body that failed the JSON rules of §9.7 keeps the extractor's status and text.
fn refused_body(rejection: JsonRejection) -> HttpError {
    HttpError::new(rejection.status(), rejection.body_text())
}

/// Verifies the proof of `grant` (§6.2) and consumes its nonce (§7) in the shared store: a replay is
/// refused on every instance. The nonce is spent even if a later check fails.
async fn consume_pop(
    app: &AppState,
    pop: &str,
    grant: &GrantClaims,
    now: u64,
) -> Result<(), HttpError> {
    let claims = verify_pop(pop, grant, &app.server_key, now)?;
    // Kept twice the proof window, so that no nonce can come back while its proof could still be valid.
    let window = 2 * crate::grant_proof::POP_WINDOW_SECS;
    let fresh = app
        .store
        .grants()
        .use_pop_nonce(claims.nonce.as_str(), as_column(now), as_column(window))
        .await?;
    if fresh {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "PoP nonce already used",
        ))
    }
}

/// `POST /auth/grant/signup` (§9.1): creates the grant's user, redeeming the signup token in
/// token-required mode. No session is made: the SDK signs in next.
pub async fn signup(
    State(app): State<AppState>,
    uri: Uri,
    body: Result<Json<GrantProof>, JsonRejection>,
) -> Result<StatusCode, HttpError> {
    let query = Query::parse(uri.query());
    if query.all("signup_token").count() > 1 {
        return Err(HttpError::bad_request(
            "Failed to deserialize query string: duplicate field `signup_token`",
        ));
    }
    let Json(proof) = body.map_err(refused_body)?;
    signup_token::check_format(uri.query())?;
    let now = now();
    let grant = verify_grant(proof.grant.as_str(), now)?;
    check_signup_grant(&grant, now)?;
    consume_pop(&app, proof.pop.as_str(), &grant, now).await?;
    let tokens = (app.signup_mode == SignupMode::TokenRequired).then_some(&app.store);
    let verdict = signup_token::judge(tokens, uri.query()).await?;
    create_account(&app, &grant.iss.z32(), verdict).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /auth/grant/session` (§9.2): a new bearer for the grant, replacing its previous one. The grant is
/// stored on its first exchange; a stored grant with the same id but another user or client key is
/// refused (the reference would hand out the first grant's session).
pub async fn exchange(
    State(app): State<AppState>,
    body: Result<Json<GrantProof>, JsonRejection>,
) -> Result<Response, HttpError> {
    let Json(proof) = body.map_err(refused_body)?;
    let now = now();
    let grant = verify_grant(proof.grant.as_str(), now)?;
    let grants = app.store.grants();
    if let Some(stored) = grants.grant(grant.jti.as_str()).await?
        && stored.revoked_at.is_some()
    {
        return Err(revoked());
    }
    consume_pop(&app, proof.pop.as_str(), &grant, now).await?;
    let user = grant.iss.z32();
    let token = new_bearer();
    let token_expires_at = (now + BEARER_LIFETIME_SECS).min(grant.exp);
    let capabilities = capability_list(&grant);
    let new = NewGrant {
        id: grant.jti.as_str(),
        public_key: &user,
        client_id: grant.client_id.as_str(),
        cnf: &grant.cnf.z32(),
        capabilities: &capabilities,
        issued_at: as_column(grant.iat),
        expires_at: as_column(grant.exp),
    };
    let hash = secret_hash(&token);
    let mint = MintBearer {
        grant: new,
        token_hash: &hash,
        expires_at: as_column(token_expires_at),
        now: as_column(now),
    };
    match grants.mint_bearer(&mint).await? {
        MintOutcome::Minted(_) => {}
        MintOutcome::NoUser => return Err(HttpError::not_found()),
        MintOutcome::NotOwner => return Err(not_owner()),
        MintOutcome::Revoked => return Err(revoked()),
        MintOutcome::Expired => {
            return Err(HttpError::new(
                StatusCode::UNAUTHORIZED,
                "Grant has expired",
            ));
        }
    }
    let session = SessionJson {
        homeserver: app.server_key.to_string(),
        pubky: &user,
        client_id: grant.client_id.as_str(),
        capabilities: grant.caps.iter().map(ToString::to_string).collect(),
        grant_id: grant.jti.as_str(),
        token_expires_at,
        grant_expires_at: grant.exp,
        created_at: now,
    };
    Ok(Json(Exchanged {
        token: &token,
        session,
    })
    .into_response())
}

/// `GET /auth/grant/session` (§9.3): the bearer's session, as the lookup read it with the stored grant.
pub async fn inspect(
    State(app): State<AppState>,
    Extension(authentication): Extension<Authentication>,
) -> Result<Response, HttpError> {
    let principal = identity(&authentication)?;
    let Some(session) = &principal.grant else {
        return Err(HttpError::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
    };
    Ok(Json(SessionJson {
        homeserver: app.server_key.to_string(),
        pubky: &principal.user.to_string(),
        client_id: &session.client_id,
        capabilities: principal
            .capabilities
            .iter()
            .map(ToString::to_string)
            .collect(),
        grant_id: &session.grant_id,
        token_expires_at: session.token_expires_at,
        grant_expires_at: session.grant_expires_at,
        created_at: as_seconds(principal.created_at / 1_000_000),
    })
    .into_response())
}

/// `DELETE /auth/grant/session` (§9.4): with a `Content-Type`, the body's grant and proof revoke the
/// grant (expired or already revoked grants too); without one, the bearer's grant is revoked. Without a
/// usable bearer nothing happens: signing out is idempotent.
pub async fn sign_out(
    State(app): State<AppState>,
    Extension(authentication): Extension<Authentication>,
    request: Request,
) -> Result<StatusCode, HttpError> {
    if !request.headers().contains_key(header::CONTENT_TYPE) {
        if let Authentication::Authenticated(principal) = &authentication
            && let Some(session) = &principal.grant
        {
            revoke(&app, &session.grant_id).await?;
        }
        return Ok(StatusCode::OK);
    }
    let Json(proof) = Json::<GrantProof>::from_request(request, &())
        .await
        .map_err(refused_body)?;
    let now = now();
    let grant = verify_grant_signature(proof.grant.as_str())?;
    consume_pop(&app, proof.pop.as_str(), &grant, now).await?;
    let Some(stored) = app.store.grants().grant(grant.jti.as_str()).await? else {
        return Err(HttpError::not_found());
    };
    if stored.public_key != grant.iss.z32() || stored.cnf != grant.cnf.z32() {
        return Err(not_owner());
    }
    revoke(&app, &stored.id).await?;
    Ok(StatusCode::OK)
}

/// `GET /auth/grant/sessions` (§9.5): the user's live grants, for a root session (bearer or cookie).
pub async fn list(
    State(app): State<AppState>,
    Extension(authentication): Extension<Authentication>,
) -> Result<Response, HttpError> {
    let principal = root_identity(&authentication)?;
    let grants = app
        .store
        .grants()
        .live_grants(&principal.user.to_string(), unix_seconds())
        .await?;
    let listed: Vec<GrantJson> = grants.iter().map(grant_json).collect();
    Ok(Json(listed).into_response())
}

/// `DELETE /auth/grant/session/{gid}` (§9.6): revokes one of the user's grants, for a root session.
pub async fn revoke_one(
    State(app): State<AppState>,
    Extension(authentication): Extension<Authentication>,
    Path(gid): Path<String>,
) -> Result<StatusCode, HttpError> {
    let principal = root_identity(&authentication)?;
    if RandomId::parse(&gid).is_err() {
        return Err(HttpError::bad_request("Invalid grant ID format"));
    }
    let Some(stored) = app.store.grants().grant(&gid).await? else {
        return Err(HttpError::not_found());
    };
    if stored.public_key != principal.user.to_string() {
        return Err(not_owner());
    }
    revoke(&app, &stored.id).await?;
    Ok(StatusCode::OK)
}

fn grant_json(grant: &GrantRecord) -> GrantJson<'_> {
    GrantJson {
        grant_id: &grant.id,
        client_id: &grant.client_id,
        capabilities: &grant.capabilities,
        issued_at: grant.issued_at,
        expires_at: grant.expires_at,
    }
}

/// Revokes a grant and ends its bearers, in one transaction.
async fn revoke(app: &AppState, grant_id: &str) -> Result<(), HttpError> {
    app.store
        .grants()
        .revoke_grant(grant_id, unix_seconds())
        .await?;
    tracing::info!(grant_id, "grant revoked");
    Ok(())
}

/// The request's principal, or 401.
fn identity(authentication: &Authentication) -> Result<&Principal, HttpError> {
    match authentication {
        Authentication::Authenticated(principal) => Ok(principal),
        _ => Err(HttpError::no_session()),
    }
}

/// The request's principal if it holds a root capability: 401 without one, 403 without root.
fn root_identity(authentication: &Authentication) -> Result<&Principal, HttpError> {
    let principal = identity(authentication)?;
    if principal.capabilities.iter().any(|c| c.is_root()) {
        Ok(principal)
    } else {
        Err(root_required())
    }
}

fn revoked() -> HttpError {
    HttpError::new(StatusCode::UNAUTHORIZED, "Grant has been revoked")
}

fn not_owner() -> HttpError {
    HttpError::new(
        StatusCode::FORBIDDEN,
        "Grant does not belong to authenticated user",
    )
}
