//! `/v1/acl/*`: Consul's ACL API (bootstrap, tokens, policies, roles) over the replicated ACL
//! tables (`fsm::AclState`), in Consul's paths and JSON.
//!
//! Every route first checks that ACLs are on (else Consul's 401 `ACL support disabled`) and
//! resolves the caller's token (`server::acl`): reads need `acl:read`, writes `acl:write`,
//! `token/self` any valid token, and the bootstrap none (it works once). SecretIDs are shown
//! only to callers with `acl:write` (`<hidden>` otherwise, as Consul does).
//!
//! The server decides what the state machine must not: new IDs and secrets (UUID v4 from the
//! operating system's CSPRNG) and times (`CreateTime`, `ExpirationTTL` turned into
//! `ExpirationTime`), all carried in the command. Bodies are validated before anything is
//! proposed; a write answers the object as stored, read back once this server applied it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

use super::{Api, Params, Res, parse_body, read_params};
use crate::acl::{
    self, AclLink, AclPolicy, AclRole, AclToken, AclValidationError, GLOBAL_MANAGEMENT_POLICY_ID,
};
use crate::fsm::{AclState, ApplyError, ApplyResult, Command, Conflict, Invalid, State};
use crate::http::ApiError;
use crate::http::token::request_token;
use crate::server::acl::{AclError, Caller};
use crate::server::{Server, ServerError};

/// A body that may be left out: its default when empty.
fn optional_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        Ok(T::default())
    } else {
        parse_body(body)
    }
}

/// Consul's placeholder for a SecretID the caller may not see.
const HIDDEN: &str = "<hidden>";

/// Consul's default bounds on `ExpirationTTL` (`acl.token_min_expiration_ttl`, `..._max_...`).
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

fn acl_index(s: &State) -> u64 {
    s.tables.acl
}

/// What a route asks of the caller's token.
#[derive(Clone, Copy)]
enum Need {
    /// Any valid token (`token/self`).
    Token,
    Read,
    Write,
}

/// The caller, once ACLs are known to be on and its token grants `need`.
fn caller(
    srv: &Server,
    headers: &HeaderMap,
    p: &HashMap<String, String>,
    need: Need,
) -> Result<Caller, ApiError> {
    enabled(srv)?;
    let caller = srv.acl_resolve(request_token(headers, p))?;
    let decision = match need {
        Need::Token => None,
        Need::Read => Some(caller.authorizer.acl_read()),
        Need::Write => Some(caller.authorizer.acl_write()),
    };
    if let Some(d) = decision {
        d.check().map_err(AclError::from)?;
    }
    Ok(caller)
}

fn enabled(srv: &Server) -> Result<(), ApiError> {
    if srv.config.acl.enabled {
        Ok(())
    } else {
        Err(AclError::Disabled.into())
    }
}

fn invalid(e: AclValidationError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

fn missing(kind: &str) -> ApiError {
    ApiError::not_found(format!("Requested {kind} does not exist"))
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .expect("a time from the clock plus at most MAX_TTL is within RFC 3339's years")
}

/// `token` as a caller sees it: its SecretID only with `reveal`.
fn shown(mut token: AclToken, reveal: bool) -> AclToken {
    if !reveal {
        token.secret_id = HIDDEN.to_string();
    }
    token
}

/// Answers a write with what `render` reads once this server has applied it.
async fn written<T: Serialize>(
    srv: &Server,
    result: ApplyResult,
    render: impl FnOnce(&State) -> Option<T>,
) -> Res {
    let deadline = Instant::now() + srv.config.write_timeout;
    if !srv.state.wait_applied(result.index, deadline).await {
        return Err(ServerError::ApplyTimeout {
            index: result.index,
        }
        .into());
    }
    let body = srv
        .state
        .read(render)
        .ok_or_else(|| ApiError::not_found("ACL not found"))?;
    Ok(axum::Json(body).into_response())
}

/// The ID a write targets: a new one on create (the body may not choose it), the URL's on
/// update (the body may repeat it).
fn target_id(
    body_id: &str,
    url_id: Option<&str>,
    kind: &str,
    title: &str,
) -> Result<String, ApiError> {
    match url_id {
        None if !body_id.is_empty() => Err(ApiError::bad_request(format!(
            "Cannot specify the ID when creating a new {kind}"
        ))),
        None => Ok(new_id()),
        Some(url) if !body_id.is_empty() && body_id != url => Err(ApiError::bad_request(format!(
            "{title} ID in URL and payload do not match"
        ))),
        Some(url) => Ok(url.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap
// ---------------------------------------------------------------------------------------------

/// Optional body of `PUT /v1/acl/bootstrap`: a SecretID chosen by the operator.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct BootstrapBody {
    #[serde(default)]
    bootstrap_secret: String,
}

/// `PUT /v1/acl/bootstrap`: the first management token, once.
pub(super) async fn bootstrap(AxState(srv): Api, body: Bytes) -> Res {
    enabled(&srv)?;
    let request: BootstrapBody = optional_body(&body)?;
    let secret_id = match request.bootstrap_secret {
        s if s.is_empty() => new_id(),
        s => s,
    };
    let token = AclToken {
        accessor_id: new_id(),
        secret_id,
        description: "Bootstrap Token (Global Management)".into(),
        policies: vec![AclLink {
            id: GLOBAL_MANAGEMENT_POLICY_ID.into(),
            name: String::new(),
        }],
        ..AclToken::default()
    };
    acl::validate_token(&token).map_err(invalid)?;
    let accessor = token.accessor_id.clone();
    let now = rfc3339(OffsetDateTime::now_utc());
    let result = srv
        .write(Command::AclBootstrap { token, now })
        .await
        .map_err(|e| match e {
            // Consul wraps this one in its permission-denied error (403).
            ServerError::Apply(ApplyError::Conflict(c @ Conflict::AclBootstrapped { .. })) => {
                ApiError::forbidden(format!("Permission denied: {c}"))
            }
            e => e.into(),
        })?;
    written(&srv, result, |s| {
        let token = s.acl.token_view(s.acl.tokens.get(&accessor)?);
        // Consul's legacy `ID` field repeats the SecretID.
        let mut v = serde_json::to_value(token).ok()?;
        v["ID"] = v["SecretID"].clone();
        Some(v)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/// `token` with an `ExpirationTTL` turned into an `ExpirationTime` from `now`.
fn expire_from(mut token: AclToken, now: OffsetDateTime) -> Result<AclToken, ApiError> {
    let Some(ttl) = token.expiration_ttl.take() else {
        return Ok(token);
    };
    let d = crate::duration::parse_duration(&ttl)
        .map_err(|e| ApiError::bad_request(format!("ExpirationTTL {ttl:?} is invalid: {e}")))?;
    if d < MIN_TTL {
        return Err(ApiError::bad_request(
            "ExpirationTTL cannot be less than 1m0s",
        ));
    }
    if d > MAX_TTL {
        return Err(ApiError::bad_request(
            "ExpirationTTL cannot be more than 24h0m0s",
        ));
    }
    token.expiration_time = Some(rfc3339(now + d));
    Ok(token)
}

/// `PUT /v1/acl/token` (create) and `PUT /v1/acl/token/:accessor_id` (update).
async fn token_write(
    srv: &Server,
    headers: &HeaderMap,
    p: &HashMap<String, String>,
    body: &Bytes,
    url_id: Option<String>,
) -> Res {
    caller(srv, headers, p, Need::Write)?;
    let token: AclToken = parse_body(body)?;
    token_store(srv, token, url_id).await
}

/// Validates `token`, completes it as a create (`url_id` `None`: new IDs unless chosen, the
/// creation and expiry times) or an update, stores it and answers it as stored.
async fn token_store(srv: &Server, mut token: AclToken, url_id: Option<String>) -> Res {
    acl::validate_token(&token).map_err(invalid)?;
    match url_id {
        // Consul 1.5+: a create may choose its AccessorID and SecretID.
        None => {
            if token.accessor_id.is_empty() {
                token.accessor_id = new_id();
            } else if srv
                .state
                .read(|s| s.acl.tokens.contains_key(&token.accessor_id))
            {
                return Err(ApiError::bad_request(
                    "Invalid Token: AccessorID is already in use",
                ));
            }
            if token.secret_id.is_empty() {
                token.secret_id = new_id();
            }
            let now = OffsetDateTime::now_utc();
            token.create_time = rfc3339(now);
            token = expire_from(token, now)?;
        }
        Some(id) => {
            if token.accessor_id.is_empty() {
                token.accessor_id = id.clone();
            } else if token.accessor_id != id {
                return Err(ApiError::bad_request(
                    "Token Accessor ID in URL and payload do not match",
                ));
            }
            if token.expiration_ttl.is_some() {
                return Err(ApiError::bad_request(
                    Invalid::AclExpirationChange.to_string(),
                ));
            }
            let secret = srv
                .state
                .read(|s| s.acl.tokens.get(&id).map(|t| t.secret_id.clone()))
                .ok_or_else(|| ApiError::not_found(format!("Cannot find token {id:?}")))?;
            if token.secret_id.is_empty() {
                token.secret_id = secret;
            }
        }
    }
    let accessor = token.accessor_id.clone();
    let result = srv.write(Command::AclTokenSet { token }).await?;
    written(srv, result, |s| {
        s.acl.tokens.get(&accessor).map(|t| s.acl.token_view(t))
    })
    .await
}

pub(super) async fn token_create(
    AxState(srv): Api,
    headers: HeaderMap,
    Query(p): Params,
    body: Bytes,
) -> Res {
    token_write(&srv, &headers, &p, &body, None).await
}

pub(super) async fn token_update(
    AxState(srv): Api,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(p): Params,
    body: Bytes,
) -> Res {
    token_write(&srv, &headers, &p, &body, Some(id)).await
}

/// Optional body of `PUT /v1/acl/token/:accessor_id/clone`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CloneBody {
    #[serde(default)]
    description: String,
}

/// `PUT /v1/acl/token/:accessor_id/clone` (Consul's): a new token (new AccessorID and SecretID)
/// with the original's policies, roles, identities, locality and expiry, and the body's
/// `Description` (else the original's). Needs `acl:write`.
pub(super) async fn token_clone(
    AxState(srv): Api,
    Path(id): Path<String>,
    Query(p): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Res {
    caller(&srv, &headers, &p, Need::Write)?;
    let request: CloneBody = optional_body(&body)?;
    let original = srv
        .state
        .read(|s| s.acl.tokens.get(&id).cloned())
        .filter(|t| !t.is_anonymous())
        .ok_or_else(|| ApiError::forbidden("Cannot find token to clone"))?;
    let clone = AclToken {
        accessor_id: String::new(),
        secret_id: String::new(),
        description: if request.description.is_empty() {
            original.description.clone()
        } else {
            request.description
        },
        policies: original.policies.clone(),
        roles: original.roles.clone(),
        service_identities: original.service_identities.clone(),
        node_identities: original.node_identities.clone(),
        local: original.local,
        expiration_time: original.expiration_time.clone(),
        ..AclToken::default()
    };
    token_store(&srv, clone, None).await
}

/// `GET /v1/acl/token/:accessor_id`.
pub(super) async fn token_get(
    AxState(srv): Api,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(p): Params,
) -> Res {
    let c = caller(&srv, &headers, &p, Need::Read)?;
    let reveal = c.authorizer.acl_write().is_allowed();
    read_params(&srv, &p, acl_index, move |s| {
        s.acl
            .tokens
            .get(&id)
            .map(|t| shown(s.acl.token_view(t), reveal))
            .ok_or_else(|| missing("token"))
    })
    .await
}

/// `GET /v1/acl/token/self`: the caller's own token, secret included (the caller has it).
pub(super) async fn token_self(AxState(srv): Api, headers: HeaderMap, Query(p): Params) -> Res {
    let c = caller(&srv, &headers, &p, Need::Token)?;
    read_params(&srv, &p, acl_index, move |s| Ok(s.acl.token_view(&c.token))).await
}

/// `GET /v1/acl/tokens`.
pub(super) async fn token_list(AxState(srv): Api, headers: HeaderMap, Query(p): Params) -> Res {
    let c = caller(&srv, &headers, &p, Need::Read)?;
    let reveal = c.authorizer.acl_write().is_allowed();
    read_params(&srv, &p, acl_index, move |s| {
        Ok(s.acl
            .tokens
            .values()
            .map(|t| shown(s.acl.token_view(t), reveal))
            .collect::<Vec<_>>())
    })
    .await
}

/// `DELETE /v1/acl/token/:accessor_id`.
pub(super) async fn token_delete(
    AxState(srv): Api,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(p): Params,
) -> Res {
    let c = caller(&srv, &headers, &p, Need::Write)?;
    if c.token.accessor_id == id {
        return Err(ApiError::bad_request(
            "Deletion of the request's authorization token is not permitted",
        ));
    }
    srv.write(Command::AclTokenDelete { accessor_id: id })
        .await?;
    Ok(axum::Json(true).into_response())
}

// ---------------------------------------------------------------------------------------------
// Policies and roles
// ---------------------------------------------------------------------------------------------

/// A policy in `GET /v1/acl/policies`: everything but the rules, as Consul lists them.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct PolicyStub {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    datacenters: Vec<String>,
    create_index: u64,
    modify_index: u64,
}

impl From<&AclPolicy> for PolicyStub {
    fn from(p: &AclPolicy) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            datacenters: p.datacenters.clone(),
            create_index: p.create_index,
            modify_index: p.modify_index,
        }
    }
}

/// What the policy routes and the role routes differ in (names, validation, how the state
/// stores and shows them, their commands); the handlers below are one set for both, so
/// `/v1/acl/policy/*` and `/v1/acl/role/*` cannot drift apart.
pub(super) trait AclObject: DeserializeOwned + Serialize + Send + 'static {
    /// Lower case, in paths and messages (`policy`).
    const KIND: &'static str;
    /// Capitalized, at the start of a message (`Policy`).
    const TITLE: &'static str;
    /// How one is shown in the list.
    type Stub: Serialize + Send + 'static;
    /// The table holding them, by ID.
    fn table(acl: &AclState) -> &BTreeMap<String, Self>;
    /// How one is shown (names of linked objects filled in).
    fn view(&self, acl: &AclState) -> Self;
    /// How one is shown in the list.
    fn stub(&self, acl: &AclState) -> Self::Stub;
    fn id_mut(&mut self) -> &mut String;
    fn name(&self) -> &str;
    fn validate(&self) -> Result<(), AclValidationError>;
    /// The command that stores it.
    fn set(self) -> Command;
    /// The command that deletes the one with ID `id`.
    fn delete(id: String) -> Command;

    fn get(acl: &AclState, id: &str) -> Option<Self> {
        Self::table(acl).get(id).map(|o| o.view(acl))
    }
    fn by_name(acl: &AclState, name: &str) -> Option<Self> {
        let mut all = Self::table(acl).values();
        all.find(|o| o.name() == name).map(|o| o.view(acl))
    }
    fn list(acl: &AclState) -> Vec<Self::Stub> {
        Self::table(acl).values().map(|o| o.stub(acl)).collect()
    }
}

impl AclObject for AclPolicy {
    const KIND: &'static str = "policy";
    const TITLE: &'static str = "Policy";
    type Stub = PolicyStub;
    fn table(acl: &AclState) -> &BTreeMap<String, Self> {
        &acl.policies
    }
    fn view(&self, _: &AclState) -> Self {
        self.clone()
    }
    fn stub(&self, _: &AclState) -> PolicyStub {
        PolicyStub::from(self)
    }
    fn id_mut(&mut self) -> &mut String {
        &mut self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), AclValidationError> {
        acl::validate_policy(self).map(drop)
    }
    fn set(self) -> Command {
        Command::AclPolicySet { policy: self }
    }
    fn delete(id: String) -> Command {
        Command::AclPolicyDelete { id }
    }
}

/// A role is listed as it is shown.
impl AclObject for AclRole {
    const KIND: &'static str = "role";
    const TITLE: &'static str = "Role";
    type Stub = AclRole;
    fn table(acl: &AclState) -> &BTreeMap<String, Self> {
        &acl.roles
    }
    fn view(&self, acl: &AclState) -> Self {
        acl.role_view(self)
    }
    fn stub(&self, acl: &AclState) -> AclRole {
        acl.role_view(self)
    }
    fn id_mut(&mut self) -> &mut String {
        &mut self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), AclValidationError> {
        acl::validate_role(self)
    }
    fn set(self) -> Command {
        Command::AclRoleSet { role: self }
    }
    fn delete(id: String) -> Command {
        Command::AclRoleDelete { id }
    }
}

/// `PUT /v1/acl/<kind>` (create) and `PUT /v1/acl/<kind>/:id` (update).
async fn object_write<O: AclObject>(
    srv: &Server,
    headers: &HeaderMap,
    p: &HashMap<String, String>,
    body: &Bytes,
    url_id: Option<String>,
) -> Res {
    caller(srv, headers, p, Need::Write)?;
    let mut object: O = parse_body(body)?;
    let id = target_id(object.id_mut(), url_id.as_deref(), O::KIND, O::TITLE)?;
    if url_id.is_some() && srv.state.read(|s| O::get(&s.acl, &id)).is_none() {
        return Err(ApiError::not_found(format!(
            "Cannot find {} {id:?}",
            O::KIND
        )));
    }
    object.id_mut().clone_from(&id);
    object.validate().map_err(invalid)?;
    let result = srv.write(object.set()).await?;
    written(srv, result, |s| O::get(&s.acl, &id)).await
}

/// `PUT /v1/acl/policy`, `PUT /v1/acl/role`.
pub(super) async fn object_create<O: AclObject>(
    AxState(srv): Api,
    headers: HeaderMap,
    Query(p): Params,
    body: Bytes,
) -> Res {
    object_write::<O>(&srv, &headers, &p, &body, None).await
}

/// `PUT /v1/acl/policy/:id`, `PUT /v1/acl/role/:id`.
pub(super) async fn object_update<O: AclObject>(
    AxState(srv): Api,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(p): Params,
    body: Bytes,
) -> Res {
    object_write::<O>(&srv, &headers, &p, &body, Some(id)).await
}

/// `GET /v1/acl/<kind>/:id` and, with `BY_NAME`, `GET /v1/acl/<kind>/name/:name`.
pub(super) async fn object_get<O: AclObject, const BY_NAME: bool>(
    AxState(srv): Api,
    Path(key): Path<String>,
    headers: HeaderMap,
    Query(p): Params,
) -> Res {
    caller(&srv, &headers, &p, Need::Read)?;
    read_params(&srv, &p, acl_index, move |s| {
        let found = if BY_NAME {
            O::by_name(&s.acl, &key)
        } else {
            O::get(&s.acl, &key)
        };
        found.ok_or_else(|| missing(O::KIND))
    })
    .await
}

/// `GET /v1/acl/policies`, `GET /v1/acl/roles`.
pub(super) async fn object_list<O: AclObject>(
    AxState(srv): Api,
    headers: HeaderMap,
    Query(p): Params,
) -> Res {
    caller(&srv, &headers, &p, Need::Read)?;
    read_params(&srv, &p, acl_index, |s| Ok(O::list(&s.acl))).await
}

/// `DELETE /v1/acl/policy/:id`, `DELETE /v1/acl/role/:id`.
pub(super) async fn object_delete<O: AclObject>(
    AxState(srv): Api,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(p): Params,
) -> Res {
    caller(&srv, &headers, &p, Need::Write)?;
    srv.write(O::delete(id)).await?;
    Ok(axum::Json(true).into_response())
}
