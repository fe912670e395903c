//! What the caller of a server route may do: the one place the server's HTTP API (except
//! `/v1/acl/*`, which has its own rules in `acl`) turns a request's token into permission
//! checks and ACL-filtered lists.
//!
//! Why one extractor: every route takes an [`Authz`] argument, so no handler can forget to
//! resolve the token, and the decision (ACLs off: everything; on: the token's authorizer, an
//! unknown token a 403 `ACL not found` even on reads) is made the same way everywhere.
//! Handlers then ask [`Authz::require`] (a denial is Consul's 403 text) or filter lists with a
//! [`Filter`], which remembers whether it dropped anything so the answer carries
//! `X-Consul-Results-Filtered-By-ACLs: true`. As Consul's `blockingQuery` does, the header is
//! left out when the request carried no token at all (the anonymous token used implicitly).
//!
//! What each route requires (Consul's "ACL Required" tables; extensions marked *ext*):
//!
//! | Route | Requires |
//! |---|---|
//! | `GET /v1/status/leader`, `/v1/status/peers`, `/v1/connect/ca/roots` | nothing |
//! | `GET /v1/operator/raft/configuration` | `operator:read` |
//! | `DELETE /v1/operator/raft/peer` | `operator:write` |
//! | `PUT /v1/catalog/register` | `node:write` on the node; `service:write` on the service (and on a proxy's destination service); `service:write` on the service of each service check |
//! | `PUT /v1/catalog/deregister` | a service: `service:write` on its name; a check: `service:write` on its service, or `node:write` for a node check; the node: `node:write`. Unknown service/check: `node:write` |
//! | `GET /v1/catalog/services` | filtered: `service:read` per service |
//! | `GET /v1/catalog/nodes`, `/v1/internal/members` | filtered: `node:read` per node |
//! | `GET /v1/catalog/service/:s`, `/v1/health/service/:s` | filtered: `node:read` on the node and `service:read` on the instance's service |
//! | `GET /v1/catalog/connect/:s`, `/v1/health/connect/:s` | as above, and nothing at all without `service:read` on `:s` (Consul answers an empty list) |
//! | `GET /v1/health/checks/:s`, `/v1/health/node/:n`, `/v1/health/state/:state` | filtered: `node:read` on each check's node, and `service:read` on its service for a service check |
//! | `GET /v1/catalog/node/:n`, `/v1/catalog/node-services/:n` | `node:read` on the node (else `null`, as Consul), and filtered: `service:read` per service |
//! | `GET /v1/catalog/datacenters` | nothing |
//! | `GET /v1/connect/intentions` | filtered: `intentions:read` on the source or the destination (Consul: either end may read the intention) |
//! | `POST /v1/connect/intentions`, `PUT`/`DELETE /v1/connect/intentions/exact` | `intentions:write` on the destination |
//! | `GET /v1/connect/intentions/exact` | `intentions:read` on the source or the destination |
//! | `GET /v1/connect/intentions/check` | `service:read` on the destination (Consul: the answer is only allow/deny) |
//! | `GET /v1/connect/intentions/match` | `intentions:read` on `?name` (by source or by destination, as Consul) |
//! | `GET /v1/connect/ca/configuration` | `operator:read` |
//! | `PUT /v1/connect/ca/configuration` | `operator:write` |
//! | `PUT`/`POST /v1/connect/ca/rotate` (*ext*) | `operator:write` |
//! | `GET /v1/internal/state-hash` (*ext*) | `operator:read` |
//! | `PUT /v1/config`, `DELETE /v1/config/:kind/:name` | `service-defaults`: `service:write` on the name; `service-intentions`: `intentions:write` on the name; `mesh`: `mesh:write` (without a `mesh` rule, `operator` decides) |
//! | `GET /v1/config/:kind/:name` | `service-defaults`: `service:read`; `service-intentions`: `intentions:read`; `mesh`: nothing |
//! | `GET /v1/config/:kind` | filtered by the read rule of each entry |

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::acl::{Authorizer, Decision};
use crate::config_entries::ConfigKind;
use crate::http::token::request_token;
use crate::http::{ApiError, mark_filtered};
use crate::server::Server;
use crate::server::acl::AclError;

/// What the request's caller may do.
pub(super) struct Authz {
    /// `None`: ACLs are off, everything is allowed.
    authorizer: Option<Arc<Authorizer>>,
    /// Whether the request named a token (the filtered header is only set then).
    token_given: bool,
}

impl FromRequestParts<Arc<Server>> for Authz {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, srv: &Arc<Server>) -> Result<Self, Response> {
        if !srv.config.acl.enabled {
            return Ok(Self {
                authorizer: None,
                token_given: false,
            });
        }
        let Query(query) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map_err(IntoResponse::into_response)?;
        let token = request_token(&parts.headers, &query);
        let caller = srv
            .acl_resolve(token)
            .map_err(|e| ApiError::from(e).into_response())?;
        Ok(Self {
            authorizer: Some(caller.authorizer),
            token_given: token.is_some(),
        })
    }
}

impl Authz {
    /// Whether `decide` allows (always with ACLs off).
    pub(super) fn allows<'s>(
        &'s self,
        decide: impl FnOnce(&'s Authorizer) -> Decision<'s>,
    ) -> bool {
        self.authorizer
            .as_ref()
            .is_none_or(|a| decide(a).is_allowed())
    }

    /// `Ok` when `decide` allows, else Consul's 403 for the denial.
    pub(super) fn require<'s>(
        &'s self,
        decide: impl FnOnce(&'s Authorizer) -> Decision<'s>,
    ) -> Result<(), ApiError> {
        match &self.authorizer {
            None => Ok(()),
            Some(a) => decide(a)
                .check()
                .map_err(|e| ApiError::from(AclError::from(e))),
        }
    }

    /// `Ok` when either decision allows, else the denial of the last (Consul's "either end of
    /// the intention" rule).
    pub(super) fn require_any<'s>(
        &'s self,
        first: impl FnOnce(&'s Authorizer) -> Decision<'s>,
        second: impl FnOnce(&'s Authorizer) -> Decision<'s>,
    ) -> Result<(), ApiError> {
        if self.allows(first) {
            Ok(())
        } else {
            self.require(second)
        }
    }

    /// A filter for one list answer.
    pub(super) fn filter(&self) -> Filter<'_> {
        Filter {
            authz: self,
            dropped: AtomicBool::new(false),
        }
    }

    /// Reading a config entry of `kind` named `name` (Consul's `CanRead`).
    pub(super) fn config_read(&self, kind: ConfigKind, name: &str) -> bool {
        self.authorizer
            .as_ref()
            .and_then(|a| config_rule(a, kind, name, false))
            .is_none_or(|d| d.is_allowed())
    }

    /// [`Self::config_read`] (`write` false) or Consul's `CanWrite` (true, for writes and
    /// deletes), as a 403 naming the rule of `kind`.
    pub(super) fn require_config(
        &self,
        kind: ConfigKind,
        name: &str,
        write: bool,
    ) -> Result<(), ApiError> {
        match self
            .authorizer
            .as_ref()
            .and_then(|a| config_rule(a, kind, name, write))
        {
            None => Ok(()),
            Some(d) => d.check().map_err(|e| AclError::from(e).into()),
        }
    }
}

/// The permission a config entry of `kind` named `name` needs, `None` for none (reading the
/// `mesh` entry).
fn config_rule<'a>(
    a: &'a Authorizer,
    kind: ConfigKind,
    name: &'a str,
    write: bool,
) -> Option<Decision<'a>> {
    Some(match (kind, write) {
        (ConfigKind::ServiceDefaults, false) => a.service_read(name),
        (ConfigKind::ServiceDefaults, true) => a.service_write(name),
        (ConfigKind::ServiceIntentions, false) => a.intentions_read(name),
        (ConfigKind::ServiceIntentions, true) => a.intentions_write(name),
        (ConfigKind::Mesh, false) => return None,
        (ConfigKind::Mesh, true) => a.mesh_write(),
    })
}

/// Decides, entry by entry, what a list answer keeps, and remembers whether it dropped any.
pub(super) struct Filter<'a> {
    authz: &'a Authz,
    /// Atomic (not a `Cell`) so a handler's future holding the filter stays `Send`.
    dropped: AtomicBool,
}

impl<'a> Filter<'a> {
    /// Whether an entry `decide` allows stays in the answer.
    pub(super) fn keep<'s>(&'s self, decide: impl FnOnce(&'s Authorizer) -> Decision<'s>) -> bool {
        self.keep_if(self.authz.allows(decide))
    }

    /// Records the outcome `kept` of a check made by other means.
    pub(super) fn keep_if(&self, kept: bool) -> bool {
        if !kept {
            self.dropped.store(true, Ordering::Relaxed);
        }
        kept
    }

    /// The authorization this filter applies.
    pub(super) fn authz(&self) -> &'a Authz {
        self.authz
    }

    /// `response` with `X-Consul-Results-Filtered-By-ACLs: true` when an entry was dropped and
    /// the request named a token.
    pub(super) fn mark(&self, response: Response) -> Response {
        mark_filtered(
            response,
            self.dropped.load(Ordering::Relaxed) && self.authz.token_given,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Rules;
    use crate::intentions::DefaultPolicy;

    fn authz(rules: &str, token_given: bool) -> Authz {
        let rules = Rules::from_hcl(rules).unwrap();
        Authz {
            authorizer: Some(Arc::new(Authorizer::new("a", &rules, DefaultPolicy::Deny))),
            token_given,
        }
    }

    fn filtered(authz: &Authz, names: &[&str]) -> (Vec<String>, Option<axum::http::HeaderValue>) {
        let filter = authz.filter();
        let kept = names
            .iter()
            .filter(|n| filter.keep(|a| a.service_read(n)))
            .map(|n| n.to_string())
            .collect();
        let response = filter.mark(().into_response());
        (
            kept,
            response
                .headers()
                .get(crate::http::FILTERED_HEADER)
                .cloned(),
        )
    }

    #[test]
    fn lists_say_they_were_filtered_only_to_a_named_token() {
        let web = "service \"web\" {\n  policy = \"read\"\n}\n";
        let (kept, header) = filtered(&authz(web, true), &["db", "web"]);
        assert_eq!(kept, ["web"]);
        assert_eq!(header.as_ref().and_then(|h| h.to_str().ok()), Some("true"));
        // Nothing dropped: no header.
        assert_eq!(filtered(&authz(web, true), &["web"]).1, None);
        // The anonymous token used implicitly: filtered, but not told so (Consul).
        let (kept, header) = filtered(&authz(web, false), &["db", "web"]);
        assert_eq!((kept.len(), header), (1, None));
        // ACLs off: everything, never the header.
        let off = Authz {
            authorizer: None,
            token_given: true,
        };
        assert_eq!(filtered(&off, &["db", "web"]).0.len(), 2);
    }

    #[test]
    fn require_any_passes_on_either_end_and_reports_the_second() {
        let a = authz("service \"web\" {\n  policy = \"read\"\n}\n", true);
        assert!(
            a.require_any(|z| z.intentions_read("web"), |z| z.intentions_read("db"))
                .is_ok()
        );
        assert!(
            a.require_any(|z| z.intentions_read("db"), |z| z.intentions_read("web"))
                .is_ok()
        );
        let e = a
            .require_any(|z| z.intentions_read("x"), |z| z.intentions_read("db"))
            .unwrap_err();
        assert_eq!(e.status, 403);
        assert!(
            e.message.contains("'intention:read' on \"db\""),
            "{}",
            e.message
        );
        assert!(a.require_config(ConfigKind::Mesh, "mesh", false).is_ok());
        assert!(a.require_config(ConfigKind::Mesh, "mesh", true).is_err());
        assert!(a.config_read(ConfigKind::ServiceDefaults, "web"));
        assert!(!a.config_read(ConfigKind::ServiceIntentions, "db"));
    }
}
