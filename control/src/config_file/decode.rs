//! The keys `meshd` reads from a configuration file, as one table ([`ROOT`]), and the walk that
//! lays a parsed file over the [`FileConfig`] built so far.
//!
//! Laying files one after the other over the same `FileConfig` is Consul's merge: a key a later
//! file sets replaces the earlier value; `retry_join` appends.

use std::net::IpAddr;
use std::path::PathBuf;

use mesh_policy::spanned::{Entry, Value};

use super::{FileConfig, Problem, Role, Secret};
use crate::intentions::DefaultPolicy;

/// A problem with the key at `key` (its dotted path), on `line`.
#[derive(Debug)]
pub(super) struct Located {
    pub line: Option<usize>,
    pub key: String,
    pub problem: Problem,
}

type Set = fn(&mut FileConfig, &Value, Role) -> Result<(), Problem>;

enum Node {
    Leaf(Set),
    Block(&'static [Key]),
}

struct Key {
    name: &'static str,
    node: Node,
    /// The subcommands that take the key, and why the others do not.
    roles: &'static [Role],
    why_not: &'static str,
    /// A key of the same block that says the same thing another way.
    excludes: Option<&'static str>,
}

const ALL: &[Role] = &[Role::Server, Role::Dev, Role::Agent];
const SERVERS: &[Role] = &[Role::Server, Role::Dev];
const CLUSTER: &[Role] = &[Role::Server, Role::Agent];

const fn leaf(name: &'static str, set: Set) -> Key {
    Key {
        name,
        node: Node::Leaf(set),
        roles: ALL,
        why_not: "",
        excludes: None,
    }
}

const fn block(name: &'static str, keys: &'static [Key]) -> Key {
    Key {
        name,
        node: Node::Block(keys),
        roles: ALL,
        why_not: "",
        excludes: None,
    }
}

impl Key {
    const fn only(self, roles: &'static [Role], why_not: &'static str) -> Key {
        Key {
            roles,
            why_not,
            ..self
        }
    }

    const fn excludes(self, other: &'static str) -> Key {
        Key {
            excludes: Some(other),
            ..self
        }
    }
}

const NO_XDS_PORT: &str = "is not supported: this mesh has no separate gRPC (xDS) port, \
     sidecars read the agent's HTTP API; the servers' RPC port is ports.server";
const ALWAYS_VERIFIED: &str = "cannot be false: this build always verifies certificates when \
     TLS is configured (secure by default); remove the key or set it to true";
const TLS_NOT_DEV: &str = "meshd dev serves its RPC port on loopback without TLS";
const JOIN_NOT_DEV: &str = "meshd dev is a single server that bootstraps alone";
const TOKENS_AGENT_ONLY: &str =
    "a server's own agent acts with the servers' internal secret; tokens are for meshd agent";

/// Consul's agent configuration keys this mesh supports, as they nest.
const ROOT: &[Key] = &[
    leaf("datacenter", |c, v, _| set(&mut c.datacenter, name(v)?)),
    leaf("node_name", |c, v, _| set(&mut c.node_name, name(v)?)),
    leaf("data_dir", |c, v, _| set(&mut c.data_dir, path(v)?)),
    leaf("bind_addr", |c, v, _| set(&mut c.bind_addr, ip(v)?)),
    leaf("client_addr", |c, v, _| set(&mut c.client_addr, ip(v)?)),
    block(
        "addresses",
        &[
            leaf("http", |c, v, _| set(&mut c.http_address, ip(v)?)),
            leaf("grpc", |_, _, _| Err(Problem::Refused(NO_XDS_PORT))),
        ],
    ),
    block(
        "ports",
        &[
            leaf("http", |c, v, _| set(&mut c.ports.http, port(v)?)),
            leaf("server", |c, v, _| set(&mut c.ports.server, port(v)?)).only(
                SERVERS,
                "an agent serves no RPC port (its servers' RPC addresses go in retry_join)",
            ),
            leaf("grpc", |_, _, _| Err(Problem::Refused(NO_XDS_PORT))),
        ],
    ),
    leaf("server", |_, v, role| server_agrees(boolean(v)?, role)),
    leaf("bootstrap_expect", |c, v, _| {
        set(&mut c.bootstrap_expect, count(v)?)
    })
    .only(
        &[Role::Server],
        "bootstrap_expect is a setting of meshd server",
    ),
    leaf("retry_join", |c, v, _| {
        c.retry_join.extend(strings(v)?);
        Ok(())
    })
    .only(CLUSTER, JOIN_NOT_DEV),
    block(
        "tls",
        &[
            block(
                "defaults",
                &[
                    leaf("ca_file", |c, v, _| set(&mut c.tls.ca_file, path(v)?)),
                    leaf("cert_file", |c, v, _| set(&mut c.tls.cert_file, path(v)?)),
                    leaf("key_file", |c, v, _| set(&mut c.tls.key_file, path(v)?)),
                    leaf("verify_incoming", verified),
                    leaf("verify_outgoing", verified),
                ],
            ),
            block("internal_rpc", &[leaf("verify_server_hostname", verified)]),
        ],
    )
    .only(CLUSTER, TLS_NOT_DEV),
    block(
        "auto_encrypt",
        &[
            leaf("allow_tls", |c, v, _| {
                set(&mut c.auto_encrypt_allow_tls, boolean(v)?)
            })
            .only(
                &[Role::Server],
                "allow_tls is the servers' side of auto-encrypt (agents set auto_encrypt.tls)",
            ),
            leaf("tls", |c, v, _| set(&mut c.auto_encrypt_tls, boolean(v)?)).only(
                &[Role::Agent],
                "tls is the agents' side of auto-encrypt (servers set auto_encrypt.allow_tls)",
            ),
        ],
    ),
    block(
        "acl",
        &[
            // Agents take these as Consul's do, and have nothing to switch: servers enforce.
            leaf("enabled", |c, v, _| set(&mut c.acl.enabled, boolean(v)?)),
            leaf("default_policy", |c, v, _| {
                set(&mut c.acl.default_policy, policy(v)?)
            }),
            block(
                "tokens",
                &[
                    leaf("agent", |c, v, _| set(&mut c.acl.agent_token, secret(v)?)),
                    leaf("default", |c, v, _| {
                        set(&mut c.acl.default_token, secret(v)?)
                    }),
                ],
            )
            .only(&[Role::Agent], TOKENS_AGENT_ONLY),
        ],
    ),
    block(
        "limits",
        &[
            leaf("http_max_conns_per_client", |c, v, _| {
                set(&mut c.limits.http_max_conns_per_client, positive(v)?)
            }),
            leaf("http_read_header_timeout", |c, v, _| {
                set(&mut c.limits.http_read_header_timeout, duration(v)?)
            }),
            leaf("http_max_request_body", |c, v, _| {
                set(&mut c.limits.http_max_request_body, positive(v)?)
            }),
        ],
    ),
    block(
        "cache",
        &[
            leaf("max_entries", |c, v, _| {
                set(&mut c.limits.cache_max_entries, positive(v)?)
            }),
            leaf("leaf_max_entries", |c, v, _| {
                set(&mut c.limits.leaf_max_entries, positive(v)?)
            }),
        ],
    )
    .only(
        &[Role::Agent],
        "the cache bounds are a setting of meshd agent (a server's own agent keeps the defaults)",
    ),
    leaf("encrypt", |c, v, _| {
        c.encrypt_key_file = None;
        set(&mut c.encrypt, secret(v)?)
    })
    .only(
        &[Role::Server],
        "the sealing key is a setting of meshd server",
    )
    .excludes("encrypt_key_file"),
    leaf("encrypt_key_file", |c, v, _| {
        c.encrypt = None;
        set(&mut c.encrypt_key_file, path(v)?)
    })
    .only(
        &[Role::Server],
        "the sealing key is a setting of meshd server",
    )
    .excludes("encrypt"),
];

/// Lays the parsed file `root` over `config`.
pub(super) fn apply(config: &mut FileConfig, root: &Value, role: Role) -> Result<(), Located> {
    match root {
        Value::Object(entries) => walk(config, entries, ROOT, "", role),
        other => Err(Located {
            line: None,
            key: "the file".into(),
            problem: Problem::WrongType {
                expected: "an object of configuration keys",
                found: other.kind(),
            },
        }),
    }
}

fn walk(
    config: &mut FileConfig,
    entries: &[Entry],
    keys: &'static [Key],
    prefix: &str,
    role: Role,
) -> Result<(), Located> {
    let mut seen: Vec<&'static str> = Vec::new();
    for e in entries {
        let key = if prefix.is_empty() {
            e.key.clone()
        } else {
            format!("{prefix}.{}", e.key)
        };
        let at = |problem| Located {
            line: e.line.0,
            key: key.clone(),
            problem,
        };
        let Some(k) = keys.iter().find(|k| k.name == e.key) else {
            let known = keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", ");
            return Err(at(Problem::UnknownKey { known }));
        };
        if seen.contains(&k.name) {
            return Err(at(Problem::Duplicate));
        }
        if let Some(other) = k.excludes.filter(|o| seen.contains(o)) {
            return Err(at(Problem::Exclusive { other }));
        }
        seen.push(k.name);
        if !k.roles.contains(&role) {
            return Err(at(Problem::WrongRole {
                command: role.command(),
                why: k.why_not,
            }));
        }
        match (&k.node, &e.value) {
            (Node::Leaf(set), v) => set(config, v, role).map_err(at)?,
            (Node::Block(sub), Value::Object(inner)) => walk(config, inner, sub, &key, role)?,
            (Node::Block(_), other) => {
                return Err(at(Problem::WrongType {
                    expected: "a block",
                    found: other.kind(),
                }));
            }
        }
    }
    Ok(())
}

fn set<T>(slot: &mut Option<T>, v: T) -> Result<(), Problem> {
    *slot = Some(v);
    Ok(())
}

fn wrong(expected: &'static str, v: &Value) -> Problem {
    Problem::WrongType {
        expected,
        found: v.kind(),
    }
}

fn string(v: &Value) -> Result<&str, Problem> {
    match v {
        Value::Str(s) if !s.is_empty() => Ok(s),
        Value::Str(_) => Err(Problem::InvalidValue {
            expected: "a non-empty string",
        }),
        other => Err(wrong("a string", other)),
    }
}

fn name(v: &Value) -> Result<String, Problem> {
    string(v).map(str::to_string)
}

fn path(v: &Value) -> Result<PathBuf, Problem> {
    string(v).map(PathBuf::from)
}

fn secret(v: &Value) -> Result<Secret, Problem> {
    string(v).map(Secret::new)
}

fn ip(v: &Value) -> Result<IpAddr, Problem> {
    string(v)?.parse().map_err(|_| Problem::InvalidValue {
        expected: "one IP address such as \"10.0.0.5\" or \"::1\" (go-sockaddr templates and \
                   lists of addresses are not supported)",
    })
}

fn boolean(v: &Value) -> Result<bool, Problem> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(wrong("true or false", other)),
    }
}

fn int(v: &Value) -> Result<i64, Problem> {
    match v {
        Value::Int(n) => Ok(*n),
        other => Err(wrong("a whole number", other)),
    }
}

fn port(v: &Value) -> Result<u16, Problem> {
    u16::try_from(int(v)?).map_err(|_| Problem::InvalidValue {
        expected: "a port number from 0 to 65535 (0 lets the system choose; ports cannot be \
                   disabled with -1 here)",
    })
}

fn count(v: &Value) -> Result<usize, Problem> {
    usize::try_from(int(v)?)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or(Problem::InvalidValue {
            expected: "a number of servers, at least 1",
        })
}

fn positive(v: &Value) -> Result<usize, Problem> {
    usize::try_from(int(v)?)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or(Problem::InvalidValue {
            expected: "a whole number, at least 1",
        })
}

fn duration(v: &Value) -> Result<std::time::Duration, Problem> {
    crate::duration::parse_duration(string(v)?)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(Problem::InvalidValue {
            expected: "a positive duration such as \"10s\" or \"1m30s\"",
        })
}

fn strings(v: &Value) -> Result<Vec<String>, Problem> {
    match v {
        Value::List(items) => items.iter().map(name).collect(),
        other => Err(wrong("a list of strings", other)),
    }
}

fn policy(v: &Value) -> Result<DefaultPolicy, Problem> {
    match string(v)? {
        "allow" => Ok(DefaultPolicy::Allow),
        "deny" => Ok(DefaultPolicy::Deny),
        _ => Err(Problem::InvalidValue {
            expected: "\"allow\" or \"deny\"",
        }),
    }
}

fn verified(_: &mut FileConfig, v: &Value, _: Role) -> Result<(), Problem> {
    if boolean(v)? {
        Ok(())
    } else {
        Err(Problem::Refused(ALWAYS_VERIFIED))
    }
}

fn server_agrees(server: bool, role: Role) -> Result<(), Problem> {
    match (server, role) {
        (true, Role::Server | Role::Dev) | (false, Role::Agent) => Ok(()),
        (false, _) => Err(Problem::Refused(
            "is false (a client agent's file) but this is a server: run meshd agent with this \
             file, or set server = true",
        )),
        (true, Role::Agent) => Err(Problem::Refused(
            "is true (a server's file) but this is a client agent: run meshd server with this \
             file, or set server = false",
        )),
    }
}
