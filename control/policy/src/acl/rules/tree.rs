//! The one decoder of rules, over the tree both the HCL and the JSON parser produce
//! ([`crate::spanned`]).
//!
//! The tree follows how HCL maps onto JSON (the mapping Consul relies on when it accepts either
//! form): `service "db" { policy = "read" }` is the entry `service` whose value is an object
//! with the entry `db`, whose value is an object with the entry `policy = "read"`. Entries keep
//! their order, duplicates (so a repeated segment can be refused rather than silently
//! dropped) and their line.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry as MapEntry;

use super::error::RulesError;
use super::{AccessLevel, Rules, ServiceRule};
use crate::spanned::{Entry, Line, Value};

/// Resources Consul defines that this mesh does not enforce. Listed so they are refused as
/// "not supported" instead of "unknown" (ACL rules reference, resource table).
const UNSUPPORTED: &[&str] = &[
    "key",
    "key_prefix",
    "session",
    "session_prefix",
    "event",
    "event_prefix",
    "query",
    "query_prefix",
    "keyring",
    "peering",
    "partition",
    "partition_prefix",
    "namespace",
    "namespace_prefix",
    "identity",
    "identity_prefix",
];

const LEVELS: &str = "\"read\", \"write\" or \"deny\"";

/// Decodes the top-level object of a rule text.
pub(super) fn decode(root: &Value) -> Result<Rules, RulesError> {
    let entries = match root {
        Value::Object(e) => e,
        other => {
            return Err(RulesError::WrongType {
                field: "rules".into(),
                expected: "an object",
                found: other.kind(),
                line: Line(None),
            });
        }
    };
    let mut rules = Rules::default();
    for e in entries {
        match e.key.as_str() {
            "service" => segments(e, &mut rules.services, service_rule)?,
            "service_prefix" => segments(e, &mut rules.service_prefixes, service_rule)?,
            "node" => segments(e, &mut rules.nodes, policy_only)?,
            "node_prefix" => segments(e, &mut rules.node_prefixes, policy_only)?,
            "agent" => segments(e, &mut rules.agents, policy_only)?,
            "agent_prefix" => segments(e, &mut rules.agent_prefixes, policy_only)?,
            "operator" => scalar(e, &mut rules.operator)?,
            "acl" => scalar(e, &mut rules.acl)?,
            "mesh" => scalar(e, &mut rules.mesh)?,
            r if UNSUPPORTED.contains(&r) => {
                return Err(RulesError::UnsupportedResource {
                    resource: r.into(),
                    line: e.line,
                });
            }
            r => {
                return Err(RulesError::UnknownResource {
                    resource: r.into(),
                    line: e.line,
                });
            }
        }
    }
    Ok(rules)
}

/// `operator = "write"`: one access level, `""` meaning not set.
fn scalar(e: &Entry, into: &mut Option<AccessLevel>) -> Result<(), RulesError> {
    let Value::Str(s) = &e.value else {
        return Err(RulesError::WrongType {
            field: e.key.clone(),
            expected: "a string",
            found: e.value.kind(),
            line: e.line,
        });
    };
    if into.is_some() {
        return Err(RulesError::Duplicate {
            field: e.key.clone(),
            line: e.line,
        });
    }
    if !s.is_empty() {
        *into = Some(level(&e.key, s, e.line)?);
    }
    Ok(())
}

fn level(field: &str, value: &str, line: Line) -> Result<AccessLevel, RulesError> {
    AccessLevel::parse(value).ok_or_else(|| RulesError::InvalidAccess {
        field: field.into(),
        value: value.into(),
        expected: LEVELS,
        line,
    })
}

/// `resource { "<segment>" { fields } ... }`: decodes each segment's fields with `rule`.
fn segments<V>(
    e: &Entry,
    into: &mut BTreeMap<String, V>,
    rule: fn(&str, &[Entry], Line) -> Result<V, RulesError>,
) -> Result<(), RulesError> {
    let Value::Object(segs) = &e.value else {
        return Err(RulesError::WrongType {
            field: e.key.clone(),
            expected: "a block with one label (the name or prefix)",
            found: e.value.kind(),
            line: e.line,
        });
    };
    for s in segs {
        let path = format!("{} {:?}", e.key, s.key);
        let Value::Object(fields) = &s.value else {
            return Err(RulesError::WrongType {
                field: path,
                expected: "a block",
                found: s.value.kind(),
                line: s.line,
            });
        };
        let v = rule(&path, fields, s.line)?;
        match into.entry(s.key.clone()) {
            MapEntry::Occupied(_) => {
                return Err(RulesError::Duplicate {
                    field: path,
                    line: s.line,
                });
            }
            MapEntry::Vacant(slot) => {
                slot.insert(v);
            }
        }
    }
    Ok(())
}

/// Reads the string fields of one rule, refusing unknown and repeated ones.
fn fields<'a, const N: usize>(
    path: &str,
    entries: &'a [Entry],
    names: [&'static str; N],
) -> Result<[Option<(&'a str, Line)>; N], RulesError> {
    let mut out = [None; N];
    for f in entries {
        let field = format!("{path}.{}", f.key);
        let Some(i) = names.iter().position(|n| *n == f.key) else {
            return Err(RulesError::UnknownField {
                field,
                line: f.line,
            });
        };
        let Value::Str(s) = &f.value else {
            return Err(RulesError::WrongType {
                field,
                expected: "a string",
                found: f.value.kind(),
                line: f.line,
            });
        };
        if out[i].is_some() {
            return Err(RulesError::Duplicate {
                field,
                line: f.line,
            });
        }
        out[i] = Some((s.as_str(), f.line));
    }
    Ok(out)
}

fn required_policy(
    path: &str,
    v: Option<(&str, Line)>,
    rule_line: Line,
) -> Result<AccessLevel, RulesError> {
    let field = format!("{path}.policy");
    match v {
        None => Err(RulesError::MissingField {
            field,
            line: rule_line,
        }),
        Some((s, line)) => level(&field, s, line),
    }
}

fn policy_only(path: &str, entries: &[Entry], line: Line) -> Result<AccessLevel, RulesError> {
    let [policy] = fields(path, entries, ["policy"])?;
    required_policy(path, policy, line)
}

fn service_rule(path: &str, entries: &[Entry], line: Line) -> Result<ServiceRule, RulesError> {
    let [policy, intentions] = fields(path, entries, ["policy", "intentions"])?;
    let policy = required_policy(path, policy, line)?;
    // Consul: an empty `intentions` is "not set" (`sp.Intentions != ""` guards its check).
    let intentions = match intentions {
        None | Some(("", _)) => None,
        Some((s, l)) => Some(level(&format!("{path}.intentions"), s, l)?),
    };
    Ok(ServiceRule { policy, intentions })
}
