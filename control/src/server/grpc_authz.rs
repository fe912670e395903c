//! Which ACL permissions each `Catalog` gRPC method needs: the whole method → permission
//! table in one place, pure (no I/O), so it can be read and tested alone. `server::grpc`
//! reduces a request to a [`Call`] (the names it touches, looked up in the state where the
//! request names an ID), resolves the caller and asks [`authorize`].
//!
//! Following Consul's endpoints (catalog register/deregister, health checks, intentions, leaf
//! signing, the health and intention watches):
//!
//! | method | needs |
//! |---|---|
//! | `Register` | `node:write` on the node, `service:write` on the service, on a proxy's destination, on the service a re-registered ID had, on each service a check belongs to |
//! | `Deregister` | `service:write` on the service (by the ID's current name); `node:write` for the node, a check, or an unknown service ID |
//! | `UpdateCheck`, `Heartbeat` | `node:write` on the node |
//! | `SyncNode` | what each of its writes (`Register`, `Deregister`, `UpdateCheck`) needs as its own call |
//! | `NodeState` | `node:read` on the node |
//! | `UpsertIntention`, `DeleteIntention` | `intentions:write` on the destination |
//! | `SignCsr` | `service:write` on the service (the one the CSR's SPIFFE ID must name) |
//! | `WatchRoots`, `Watch` of `TOPIC_ROOTS` / `TOPIC_ACL`, `ResolveToken` | a token that resolves |
//! | `WatchIntentions`, `Watch` of `TOPIC_INTENTIONS` | `intentions:read` on the destination |
//! | `WatchHealth`, `Watch` of `TOPIC_HEALTH` | `service:read` on the service |
//! | `Http` | decided by the server's HTTP router, as for a request to its own port |
//!
//! A token that does not resolve is refused before any of this (`ACL not found`), except on
//! `Http`. The servers' internal secret and ACLs being off bypass the table (see
//! `server::grpc`).

use crate::acl::{Authorizer, Decision, PermissionDenied};
use crate::proto::TopicKind;

/// One permission on one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    ServiceRead(&'a str),
    ServiceWrite(&'a str),
    NodeRead(&'a str),
    NodeWrite(&'a str),
    IntentionsRead(&'a str),
    IntentionsWrite(&'a str),
}

impl<'a> Need<'a> {
    fn decide(self, a: &'a Authorizer) -> Decision<'a> {
        match self {
            Need::ServiceRead(n) => a.service_read(n),
            Need::ServiceWrite(n) => a.service_write(n),
            Need::NodeRead(n) => a.node_read(n),
            Need::NodeWrite(n) => a.node_write(n),
            Need::IntentionsRead(n) => a.intentions_read(n),
            Need::IntentionsWrite(n) => a.intentions_write(n),
        }
    }
}

/// What a call requires of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement<'a> {
    /// The HTTP router decides (the request is one of its routes).
    Router,
    /// A token that resolves (the anonymous token included); no permission.
    Resolved,
    /// Every one of these permissions.
    All(Vec<Need<'a>>),
}

/// A `Catalog` call, reduced to the names its authorization depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call<'a> {
    /// `services`: every service the registration writes or takes over (see the table).
    Register {
        node: &'a str,
        services: Vec<&'a str>,
    },
    /// Deregistering a service instance that exists, by its service name.
    DeregisterService {
        service: &'a str,
    },
    /// Deregistering a node, one of its checks, or a service ID it does not have.
    DeregisterNode {
        node: &'a str,
    },
    UpdateCheck {
        node: &'a str,
    },
    Heartbeat {
        node: &'a str,
    },
    NodeState {
        node: &'a str,
    },
    UpsertIntention {
        destination: &'a str,
    },
    DeleteIntention {
        destination: &'a str,
    },
    SignCsr {
        service: &'a str,
    },
    /// One watched topic (`WatchRoots`, `WatchIntentions`, `WatchHealth`, or one topic of a
    /// `Watch` set: each is checked as its single form).
    Watch {
        kind: TopicKind,
        name: &'a str,
    },
    ResolveToken,
    Http,
}

/// The method → permission table.
pub fn requirement<'a>(call: &Call<'a>) -> Requirement<'a> {
    use Need::*;
    let all = |needs: Vec<Need<'a>>| Requirement::All(needs);
    match *call {
        Call::Register { node, ref services } => all(std::iter::once(NodeWrite(node))
            .chain(services.iter().map(|s| ServiceWrite(s)))
            .collect()),
        Call::DeregisterService { service } => all(vec![ServiceWrite(service)]),
        Call::DeregisterNode { node } | Call::UpdateCheck { node } | Call::Heartbeat { node } => {
            all(vec![NodeWrite(node)])
        }
        Call::NodeState { node } => all(vec![NodeRead(node)]),
        Call::UpsertIntention { destination } | Call::DeleteIntention { destination } => {
            all(vec![IntentionsWrite(destination)])
        }
        Call::SignCsr { service } => all(vec![ServiceWrite(service)]),
        Call::Watch { kind, name } => match kind {
            TopicKind::TopicRoots | TopicKind::TopicAcl => Requirement::Resolved,
            TopicKind::TopicIntentions => all(vec![IntentionsRead(name)]),
            TopicKind::TopicHealth => all(vec![ServiceRead(name)]),
        },
        Call::ResolveToken => Requirement::Resolved,
        Call::Http => Requirement::Router,
    }
}

/// Whether `authorizer` meets `requirement`; the first missing permission otherwise, with
/// Consul's text. (`Router` and `Resolved` pass: the caller resolved the token already.)
pub fn authorize(
    requirement: &Requirement<'_>,
    authorizer: &Authorizer,
) -> Result<(), PermissionDenied> {
    match requirement {
        Requirement::Router | Requirement::Resolved => Ok(()),
        Requirement::All(needs) => needs.iter().try_for_each(|n| n.decide(authorizer).check()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Rules, ServiceRule};
    use crate::intentions::DefaultPolicy;

    /// Shorthand for the expected requirement of a table row.
    fn all<const N: usize>(needs: [Need<'_>; N]) -> Requirement<'_> {
        Requirement::All(needs.into())
    }

    /// A token that may write service `web` (with its intentions) and node `n1`, read every
    /// other service and node, nothing else.
    fn web_writer() -> Authorizer {
        let rules = Rules::parse(
            r#"
            service "web" {
              policy = "write"
              intentions = "write"
            }
            service_prefix "" {
              policy = "read"
              intentions = "read"
            }
            node "n1" { policy = "write" }
            node_prefix "" { policy = "read" }
            "#,
        )
        .unwrap();
        Authorizer::new("acc-1", &rules, DefaultPolicy::Deny)
    }

    #[test]
    fn the_table() {
        use Need::*;
        let cases: Vec<(Call<'_>, Requirement<'_>)> = vec![
            (
                Call::Register {
                    node: "n1",
                    services: vec!["web", "db"],
                },
                all([NodeWrite("n1"), ServiceWrite("web"), ServiceWrite("db")]),
            ),
            (
                Call::Register {
                    node: "n1",
                    services: vec![],
                },
                all([NodeWrite("n1")]),
            ),
            (
                Call::DeregisterService { service: "db" },
                all([ServiceWrite("db")]),
            ),
            (Call::DeregisterNode { node: "n2" }, all([NodeWrite("n2")])),
            (Call::UpdateCheck { node: "n2" }, all([NodeWrite("n2")])),
            (Call::Heartbeat { node: "n2" }, all([NodeWrite("n2")])),
            (Call::NodeState { node: "n2" }, all([NodeRead("n2")])),
            (
                Call::UpsertIntention { destination: "db" },
                all([IntentionsWrite("db")]),
            ),
            (
                Call::DeleteIntention { destination: "db" },
                all([IntentionsWrite("db")]),
            ),
            (Call::SignCsr { service: "db" }, all([ServiceWrite("db")])),
            (
                Call::Watch {
                    kind: TopicKind::TopicRoots,
                    name: "x",
                },
                Requirement::Resolved,
            ),
            (
                Call::Watch {
                    kind: TopicKind::TopicAcl,
                    name: "",
                },
                Requirement::Resolved,
            ),
            (
                Call::Watch {
                    kind: TopicKind::TopicIntentions,
                    name: "db",
                },
                all([IntentionsRead("db")]),
            ),
            (
                Call::Watch {
                    kind: TopicKind::TopicHealth,
                    name: "db",
                },
                all([ServiceRead("db")]),
            ),
            (Call::ResolveToken, Requirement::Resolved),
            (Call::Http, Requirement::Router),
        ];
        for (call, want) in cases {
            assert_eq!(requirement(&call), want, "{call:?}");
        }
    }

    #[test]
    fn decisions_and_denial_text() {
        let a = web_writer();
        let ok = |c: Call<'_>| authorize(&requirement(&c), &a);
        assert!(
            ok(Call::Register {
                node: "n1",
                services: vec!["web"]
            })
            .is_ok()
        );
        assert!(ok(Call::SignCsr { service: "web" }).is_ok());
        assert!(ok(Call::UpsertIntention { destination: "web" }).is_ok());
        assert!(
            ok(Call::Watch {
                kind: TopicKind::TopicHealth,
                name: "db"
            })
            .is_ok()
        );
        assert!(ok(Call::NodeState { node: "n9" }).is_ok());
        // The first missing permission is the one named.
        let denied = ok(Call::Register {
            node: "n1",
            services: vec!["web", "db"],
        })
        .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "Permission denied: token with AccessorID 'acc-1' lacks permission 'service:write' on \"db\""
        );
        let denied = ok(Call::Heartbeat { node: "n2" }).unwrap_err();
        assert!(
            denied.to_string().contains("'node:write' on \"n2\""),
            "{denied}"
        );
        assert!(ok(Call::SignCsr { service: "db" }).is_err());
        assert!(ok(Call::DeleteIntention { destination: "db" }).is_err());
        // A deny rule wins over the read-everything prefix.
        let mut rules = Rules::default();
        rules.services.insert(
            "db".into(),
            ServiceRule {
                policy: crate::acl::AccessLevel::Deny,
                intentions: None,
            },
        );
        let deny = Authorizer::new("acc-2", &rules, DefaultPolicy::Allow);
        let health = |name| {
            let call = Call::Watch {
                kind: TopicKind::TopicHealth,
                name,
            };
            authorize(&requirement(&call), &deny).is_ok()
        };
        assert!(!health("db"));
        assert!(health("web"));
    }
}
