//! WebDAV locks (PROTOCOL-0.17.md §17): `LOCK` and `UNLOCK` on path-addressed storage, and the lock
//! check every `PUT` and `DELETE` passes on both route families ([`write_lock`]). A lock is an exclusive
//! write lock on one file path of its owner, stored in the metadata database (see
//! [`homestead_backends::metadata::Locks`]), so every instance honours it. A write under a lock keeps it
//! alive while it runs and re-checks it just before its commit ([`HeldLock`]).

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use homestead_backends::metadata::{LockRefresh, NewLock, TakeOutcome, User};
use homestead_backends::store::BodyError;
use homestead_backends::{EntryPath, Store, StoreError};
use homestead_middleware::Authentication;
use homestead_middleware::auth::own_account;
use http::header;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::authorization::{check_write, identity};
use crate::http_error::HttpError;
use crate::lookups::StoreCredentials;
use crate::routes::AppState;
use crate::routes::storage::{decode_path, entry_path, method_not_allowed, patient_body};
use crate::webdav::{self, IF, LOCK_TOKEN, TIMEOUT};

/// The methods a path-addressed storage URL supports (§12.2).
const ALLOW: &str = "GET, HEAD, PUT, DELETE, LOCK, UNLOCK";
/// A write under a lock keeps it live for at least this long after each push, seconds (§17.4).
const WRITE_HOLD_SECS: u32 = 30;
/// How often a running write pushes its lock's expiry (§17.4).
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(10);

/// Serves a path-addressed request whose method is not one of GET, HEAD, PUT and DELETE: `LOCK`,
/// `UNLOCK`, or 405 with the methods allowed, without authentication and without reading the body.
pub(crate) async fn webdav_method(
    app: &AppState,
    owner: &pkarr::PublicKey,
    authentication: &Authentication,
    raw_path: &str,
    request: Request,
) -> Response {
    let answer = match request.method().as_str() {
        method @ ("LOCK" | "UNLOCK") => match target(owner, authentication, raw_path, &request) {
            Ok(target) if method == "LOCK" => lock(app, target, request).await,
            Ok(target) => unlock(app, target, request).await,
            Err(refusal) => Err(refusal),
        },
        _ => Ok(method_not_allowed(ALLOW)),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// The file a `LOCK` or `UNLOCK` addresses and its owner's record, once the request has passed the write
/// authorization of `PUT` (§17.2 steps 1–2): an identity (401 `Unauthorized`), a file path, the served
/// area, the owner's own principal, a capability with `w` covering the path, an owner who is a user.
fn target(
    owner: &pkarr::PublicKey,
    authentication: &Authentication,
    raw_path: &str,
    request: &Request,
) -> Result<(EntryPath, User), HttpError> {
    let Some(principal) = identity(authentication) else {
        return Err(HttpError::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
    };
    let path = decode_path(raw_path)?;
    if path.is_dir() {
        return Err(HttpError::bad_request("Target path must be a file"));
    }
    let path = entry_path(path)?;
    check_write(principal, owner, &path)?;
    // The auth layer attached the owner's record with their session; none means no such user.
    let (_, user) = own_account::<_, StoreCredentials>(request).ok_or_else(HttpError::not_found)?;
    Ok((path, user.clone()))
}

/// `LOCK` (§17.2, §17.3): a refresh when `If` names a token, else a new lock from the `lockinfo` body.
async fn lock(
    app: &AppState,
    (path, user): (EntryPath, User),
    request: Request,
) -> Result<Response, HttpError> {
    if user.disabled {
        return Err(HttpError::new(StatusCode::FORBIDDEN, "User is disabled"));
    }
    let headers = request.headers();
    let seconds = webdav::timeout_secs(headers.get(TIMEOUT));
    let tokens = webdav::if_tokens(headers.get_all(IF));
    let request_path = request.uri().path().to_string();
    let locks = app.store.locks();
    if !tokens.is_empty() {
        let refreshed = locks
            .refresh_lock(&LockRefresh {
                owner: &user.public_key,
                path: &path,
                tokens: &tokens,
                seconds,
            })
            .await?;
        let token = refreshed.ok_or_else(not_held)?;
        return Ok(granted(&token, seconds, &request_path, false));
    }
    let body = lockinfo(request.into_body(), app.body_read_timeout).await?;
    if !webdav::lockinfo_acceptable(&body) {
        return Err(HttpError::bad_request(
            "Only exclusive write locks are supported",
        ));
    }
    let token = webdav::new_token();
    match locks
        .take_lock(&NewLock {
            owner: &user.public_key,
            path: &path,
            token: &token,
            seconds,
        })
        .await?
    {
        TakeOutcome::Taken => Ok(granted(&token, seconds, &request_path, true)),
        TakeOutcome::Locked => Err(locked()),
        TakeOutcome::NoSuchUser => Err(HttpError::not_found()),
    }
}

/// Reads a `lockinfo` body of at most [`webdav::MAX_LOCKINFO_BYTES`] (413 beyond), all of it within
/// `timeout`.
async fn lockinfo(body: Body, timeout: Duration) -> Result<Vec<u8>, HttpError> {
    let mut data = body.into_data_stream();
    let mut pieces = patient_body(&mut data, timeout);
    let mut bytes = Vec::new();
    while let Some(piece) = pieces.next().await {
        let piece = piece.map_err(|err| HttpError::body_failed(&err))?;
        if bytes.len() + piece.len() > webdav::MAX_LOCKINFO_BYTES {
            return Err(HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "lockinfo body too large",
            ));
        }
        bytes.extend_from_slice(&piece);
    }
    Ok(bytes)
}

/// The 200 of a granted (`new`, with its `Lock-Token`) or refreshed lock (§17.2 step 7).
fn granted(token: &str, seconds: u32, request_path: &str, new: bool) -> Response {
    let body = webdav::lock_answer(token, seconds, request_path);
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::try_from(format!("Second-{seconds}")) {
        headers.insert(TIMEOUT, value);
    }
    if new && let Ok(value) = HeaderValue::try_from(format!("<{}{token}>", webdav::TOKEN_SCHEME)) {
        headers.insert(LOCK_TOKEN, value);
    }
    response
}

/// `UNLOCK` (§17.7): the write authorization (a disabled owner may unlock), then the lock named by
/// `Lock-Token` on this path is deleted, expired or not.
async fn unlock(
    app: &AppState,
    (path, user): (EntryPath, User),
    request: Request,
) -> Result<Response, HttpError> {
    let Some(token) = webdav::lock_token(request.headers().get(LOCK_TOKEN)) else {
        return Err(HttpError::bad_request(
            "Missing or malformed Lock-Token header",
        ));
    };
    if !app
        .store
        .locks()
        .release_lock(&user.public_key, &path, &token)
        .await?
    {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            "No lock with this token on this path",
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// 423: a live lock holds the path and the request does not present it.
fn locked() -> HttpError {
    HttpError::new(StatusCode::LOCKED, "Resource is locked")
}

/// 412: the tokens presented do not name the live lock on the path (or it was lost).
fn not_held() -> HttpError {
    HttpError::new(
        StatusCode::PRECONDITION_FAILED,
        "The If header does not name the live lock on this path",
    )
}

/// The lock a write runs under: kept alive (its expiry pushed to at least now + 30 s every 10 s) until
/// this value is dropped, and re-checked with [`HeldLock::confirm`] just before the write commits.
#[derive(Debug)]
pub struct HeldLock {
    store: Store,
    owner: String,
    path: EntryPath,
    token: String,
    keep_alive: tokio::task::AbortHandle,
}

impl HeldLock {
    /// Ok while the lock is still the live lock on the path with this token; 412 when it expired and
    /// was taken over, or was unlocked, meanwhile.
    pub async fn confirm(&self) -> Result<(), HttpError> {
        let live = self
            .store
            .locks()
            .live_lock(&self.owner, &self.path)
            .await?;
        if live.as_deref() == Some(self.token.as_str()) {
            Ok(())
        } else {
            Err(not_held())
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.keep_alive.abort();
    }
}

/// The lock check of a `PUT` or `DELETE` of `owner`'s `path` (§17.4), before the write starts: no token
/// in `If` and no live lock → the write holds nothing (None); no token but a live lock → 423; a token of
/// the live lock → the write runs under it (its [`HeldLock`]); tokens but none of the live lock → 412.
pub async fn write_lock(
    store: &Store,
    owner: &str,
    path: &EntryPath,
    headers: &HeaderMap,
) -> Result<Option<HeldLock>, HttpError> {
    let tokens = webdav::if_tokens(headers.get_all(IF));
    let token = match store.locks().live_lock(owner, path).await? {
        None if tokens.is_empty() => return Ok(None),
        Some(_) if tokens.is_empty() => return Err(locked()),
        Some(live) if tokens.contains(&live) => live,
        _ => return Err(not_held()),
    };
    // At once, at least 30 s; false: it expired since it was read.
    if !store
        .locks()
        .keep_lock_alive(&token, WRITE_HOLD_SECS)
        .await?
    {
        return Err(not_held());
    }
    let keep_alive = tokio::spawn(keep_alive(store.clone(), token.clone())).abort_handle();
    Ok(Some(HeldLock {
        store: store.clone(),
        owner: owner.to_string(),
        path: path.clone(),
        token,
        keep_alive,
    }))
}

/// Pushes the expiry of lock `token` every [`KEEP_ALIVE_EVERY`] until aborted or the lock is gone (the
/// commit's re-check then refuses the write).
async fn keep_alive(store: Store, token: String) {
    loop {
        tokio::time::sleep(KEEP_ALIVE_EVERY).await;
        match store.locks().keep_lock_alive(&token, WRITE_HOLD_SECS).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => tracing::warn!(%err, "cannot keep a write's lock alive"),
        }
    }
}

/// A write's lock re-check that refused it while its body streamed; carries the answer.
#[derive(Debug)]
struct LockRefusal(HttpError);

impl std::fmt::Display for LockRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for LockRefusal {}

/// `body` as the Store reads it for a write under `lock`: when the body ends, the lock is checked once
/// more ([`HeldLock::confirm`]), just before the Store commits; a lost lock ends the body with an error
/// instead, so nothing is committed and [`commit_error`] answers 412. The lock is kept alive as long as
/// the body is being read.
pub fn confirmed<S, E>(
    body: S,
    lock: Option<HeldLock>,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + Unpin
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Into<BodyError> + Send,
{
    let body = body.map(|item| item.map_err(Into::into));
    let Some(held) = lock else {
        return body.left_stream();
    };
    // After the last piece: nothing if the lock still holds, else the refusal as the body's error.
    let recheck =
        futures_util::stream::once(async move { held.confirm().await.err() }).filter_map(
            |refusal| async move {
                refusal.map(|refusal| Err(Box::new(LockRefusal(refusal)) as BodyError))
            },
        );
    body.chain(Box::pin(recheck)).right_stream()
}

/// The answer to a failed commit of a write whose body went through [`confirmed`]: the lock's refusal
/// when the re-check failed, else the Store's error as usual.
pub fn commit_error(err: StoreError) -> HttpError {
    if let StoreError::Body { source, .. } = &err
        && let Some(LockRefusal(refusal)) = source.downcast_ref::<LockRefusal>()
    {
        return refusal.clone();
    }
    err.into()
}
