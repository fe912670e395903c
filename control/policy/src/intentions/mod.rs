//! Intentions: Consul's service-to-service authorization rules, and the decision made from them.
//!
//! Pure code, no I/O and no clocks: the state machine uses [`validate`], [`precedence`] and
//! [`legacy_id`] on write, the agent's `authorize` / `intentions/check` / `intentions/match`
//! endpoints and the proxy's connection manager use [`IntentionSet`] on read. Keeping it in one
//! place means every one of them reaches the same answer for the same snapshot.
//!
//! Semantics follow Consul (open source, one partition):
//!
//! * Each side of an intention is `namespace/name`; either part may be the wildcard `*`, but a
//!   wildcard namespace needs a wildcard name (`*/web` is rejected by [`validate`]).
//! * [`precedence`] gives the documented 9-level table: the destination's specificity counts
//!   more than the source's, so `* => db` (8) beats `web => *` (6).
//! * For a connection the highest-precedence matching intention decides; if none matches the
//!   default policy (Consul: the ACL `default_policy`) decides. An intention with L7
//!   `Permissions` denies at L4, as Consul's authorize/check endpoints do.
//! * Two intentions that match the same connection can only tie on precedence when they share
//!   the same 4-tuple, which Consul's store forbids; our input is a snapshot we do not control,
//!   so on a tie a deny wins and the rest of the order is deterministic. A decision never
//!   depends on the order intentions were given in.
//!
//! [`IntentionSet`] indexes a snapshot by destination and then by source so a decision is at
//! most nine hash look-ups, whatever the number of intentions (10k-intention bench).

mod error;
pub mod explain;
pub mod l7;
mod legacy_id;
pub mod matcher;
pub mod normalize;
mod validate;

#[cfg(test)]
mod explain_tests;
#[cfg(test)]
mod l7_tests;
#[cfg(test)]
mod normalize_tests;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Intention, IntentionAction};

pub use error::IntentionError;
pub use explain::{Considered, Mismatch, Outcome, Side};
pub use l7::{HttpDecision, HttpReason, HttpRequest};
pub use legacy_id::legacy_id;
pub use validate::{
    HTTP_METHODS, MAX_DESCRIPTION_LEN, MAX_META_KEY_LEN, MAX_META_PAIRS, MAX_META_VALUE_LEN,
    validate,
};

/// The wildcard that stands for "any" namespace or service name.
pub const WILDCARD: &str = "*";

/// The namespace used when none is given (the only one in Consul's open-source edition).
pub const DEFAULT_NAMESPACE: &str = "default";

/// A `consul`-typed intention from `source` to `destination` in the default namespace, with
/// neither action nor permissions and the server-owned fields (ID, precedence, indexes) unset:
/// what a client fills in before it writes one. The HTTP API starts its bodies from it, and the
/// tests of every crate build theirs with struct update syntax over it.
pub fn intention_between(source: &str, destination: &str) -> Intention {
    Intention {
        id: String::new(),
        source_name: source.to_string(),
        source_ns: DEFAULT_NAMESPACE.to_string(),
        destination_name: destination.to_string(),
        destination_ns: DEFAULT_NAMESPACE.to_string(),
        source_type: "consul".to_string(),
        action: None,
        permissions: Vec::new(),
        description: String::new(),
        meta: BTreeMap::new(),
        precedence: 0,
        create_index: 0,
        modify_index: 0,
    }
}

/// How many of `ns/name` are exact: 2 for `ns/name`, 1 for `ns/*`, 0 for `*/*`.
///
/// A wildcard namespace counts as 0 whatever the name, as in Consul's `intentionCountExact`
/// (an exact name after a wildcard namespace cannot be written).
fn count_exact(ns: &str, name: &str) -> u32 {
    if ns == WILDCARD {
        0
    } else if name == WILDCARD {
        1
    } else {
        2
    }
}

/// Consul's precedence value for an intention: 9 = exact/exact ... 1 = `*/*` => `*/*`.
///
/// Within one namespace only 9 (`web => db`), 8 (`* => db`), 6 (`web => *`) and 5 (`* => *`)
/// occur. The destination weighs more than the source: each step of destination specificity is
/// worth three, each step of source specificity one (Consul's `computeIntentionPrecedence`).
pub fn precedence(src_ns: &str, src: &str, dst_ns: &str, dst: &str) -> u32 {
    let max = 3 * count_exact(dst_ns, dst) + 3;
    max - (2 - count_exact(src_ns, src))
}

/// What happens to a connection no intention matches (Consul derives it from the ACL
/// `default_policy`: "allow all" allows, "deny all" denies). Deny unless configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    /// Unmatched connections and requests are let through (Consul's `default_policy = "allow"`).
    Allow,
    /// Unmatched connections and requests are refused; the default, failing closed.
    #[default]
    Deny,
}

impl DefaultPolicy {
    /// Consul's lowercase spelling (`allow`, `deny`), as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::Allow => "allow",
            DefaultPolicy::Deny => "deny",
        }
    }

    /// Whether this policy lets an unmatched connection or request through.
    pub fn allows(self) -> bool {
        self == DefaultPolicy::Allow
    }
}

impl fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of an intention: its source and destination (unique in Consul's store).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IntentionKey {
    /// Consul's `SourceNS`: the source's namespace, or `*`.
    #[serde(rename = "SourceNS")]
    pub source_ns: String,
    /// Consul's `SourceName`: the source service, or `*`.
    pub source_name: String,
    /// Consul's `DestinationNS`: the destination's namespace, or `*`.
    #[serde(rename = "DestinationNS")]
    pub destination_ns: String,
    /// Consul's `DestinationName`: the destination service, or `*`.
    pub destination_name: String,
}

impl IntentionKey {
    /// The key of intention `i` (its source and destination, copied).
    pub fn of(i: &Intention) -> Self {
        Self {
            source_ns: i.source_ns.clone(),
            source_name: i.source_name.clone(),
            destination_ns: i.destination_ns.clone(),
            destination_name: i.destination_name.clone(),
        }
    }
}

/// `"web"` in the default namespace, `"ns/web"` elsewhere (Consul's CLI spelling).
struct ServiceRef<'a>(&'a str, &'a str);

impl fmt::Display for ServiceRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == DEFAULT_NAMESPACE {
            write!(f, "\"{}\"", self.1)
        } else {
            write!(f, "\"{}/{}\"", self.0, self.1)
        }
    }
}

impl fmt::Display for IntentionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} => {}",
            ServiceRef(&self.source_ns, &self.source_name),
            ServiceRef(&self.destination_ns, &self.destination_name)
        )
    }
}

/// Why a decision was made.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An L4 intention (one with an `Action`) matched and its action applies.
    Intention {
        /// Source and destination of the matched intention.
        key: IntentionKey,
        /// The intention's `Action`, which is the decision.
        action: IntentionAction,
        /// The intention's precedence (9 = exact/exact ... 1 = `*/*` => `*/*`).
        precedence: u32,
        /// The intention's legacy ID; empty when it has none.
        id: String,
    },
    /// An L7 intention (one with `Permissions`) matched; at L4 it counts as deny, because only
    /// the HTTP filter can evaluate its permissions.
    L7Intention {
        /// Source and destination of the matched intention.
        key: IntentionKey,
        /// The intention's precedence (9 = exact/exact ... 1 = `*/*` => `*/*`).
        precedence: u32,
        /// The intention's legacy ID; empty when it has none.
        id: String,
    },
    /// A matching intention had neither `Action` nor `Permissions` (it could not have passed
    /// [`validate`]); Consul's authorize treats the empty action as not-allow.
    NoAction {
        /// Source and destination of the matched intention.
        key: IntentionKey,
        /// The intention's precedence (9 = exact/exact ... 1 = `*/*` => `*/*`).
        precedence: u32,
        /// The intention's legacy ID; empty when it has none.
        id: String,
    },
    /// No intention matched; the default policy decided.
    DefaultPolicy(DefaultPolicy),
}

impl Reason {
    /// Key of the intention that decided, if one did.
    pub fn key(&self) -> Option<&IntentionKey> {
        match self {
            Reason::Intention { key, .. }
            | Reason::L7Intention { key, .. }
            | Reason::NoAction { key, .. } => Some(key),
            Reason::DefaultPolicy(_) => None,
        }
    }
}

struct IdSuffix<'a>(&'a str);

impl fmt::Display for IdSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, ", ID {}", self.0)
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Intention {
                key,
                action,
                precedence,
                id,
            } => write!(
                f,
                "Matched L4 intention {key} ({}, precedence {precedence}{})",
                action.as_str(),
                IdSuffix(id)
            ),
            Reason::L7Intention {
                key,
                precedence,
                id,
            } => write!(
                f,
                "Matched L7 intention {key} (has Permissions, so deny at L4, precedence {precedence}{})",
                IdSuffix(id)
            ),
            Reason::NoAction {
                key,
                precedence,
                id,
            } => write!(
                f,
                "Matched intention {key} without Action or Permissions (deny, precedence {precedence}{})",
                IdSuffix(id)
            ),
            Reason::DefaultPolicy(p) => {
                write!(f, "Default behavior configured by the default policy ({p})")
            }
        }
    }
}

/// An L4 authorization decision and why it was made.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Whether the connection may be opened.
    pub allowed: bool,
    /// Which intention, or the default policy, decided (what `Display` prints).
    pub reason: Reason,
    /// The intention that decided; `None` when the default policy did.
    pub matched: Option<IntentionKey>,
}

impl Decision {
    fn from_default(policy: DefaultPolicy) -> Self {
        Self {
            allowed: policy.allows(),
            reason: Reason::DefaultPolicy(policy),
            matched: None,
        }
    }

    fn from_intention(i: &Intention) -> Self {
        let key = IntentionKey::of(i);
        let precedence = i.precedence;
        let id = i.id.clone();
        let (allowed, reason) = match l4_effect(i) {
            L4Effect::Deny => (
                false,
                Reason::Intention {
                    key: key.clone(),
                    action: IntentionAction::Deny,
                    precedence,
                    id,
                },
            ),
            L4Effect::L7 => (
                false,
                Reason::L7Intention {
                    key: key.clone(),
                    precedence,
                    id,
                },
            ),
            L4Effect::NoAction => (
                false,
                Reason::NoAction {
                    key: key.clone(),
                    precedence,
                    id,
                },
            ),
            L4Effect::Allow => (
                true,
                Reason::Intention {
                    key: key.clone(),
                    action: IntentionAction::Allow,
                    precedence,
                    id,
                },
            ),
        };
        Self {
            allowed,
            reason,
            matched: Some(key),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        write!(f, "{verdict}: {}", self.reason)
    }
}

/// What an intention does to an L4 connection, in the order a tie is broken (denies first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum L4Effect {
    Deny,
    /// Has Permissions (with or without an Action): Consul denies at L4.
    L7,
    /// Neither Action nor Permissions: Consul's `Action == allow` is false, so deny.
    NoAction,
    Allow,
}

fn l4_effect(i: &Intention) -> L4Effect {
    if !i.permissions.is_empty() {
        L4Effect::L7
    } else {
        match i.action {
            Some(IntentionAction::Deny) => L4Effect::Deny,
            Some(IntentionAction::Allow) => L4Effect::Allow,
            None => L4Effect::NoAction,
        }
    }
}

/// Consul's order for intention lists (`IntentionPrecedenceSorter`): precedence, highest
/// first, then the 4-tuple `(SourceNS, SourceName, DestinationNS, DestinationName)`
/// ascending. Intentions with the same 4-tuple (which Consul's store cannot hold) are further
/// ordered denies first, then by ID, so the order is total and input-order independent.
///
/// Uses the `precedence` field as stored; [`IntentionSet`] recomputes it first.
pub fn consul_order(a: &Intention, b: &Intention) -> Ordering {
    b.precedence
        .cmp(&a.precedence)
        .then_with(|| a.source_ns.cmp(&b.source_ns))
        .then_with(|| a.source_name.cmp(&b.source_name))
        .then_with(|| a.destination_ns.cmp(&b.destination_ns))
        .then_with(|| a.destination_name.cmp(&b.destination_name))
        .then_with(|| l4_effect(a).cmp(&l4_effect(b)))
        .then_with(|| a.id.cmp(&b.id))
}

/// The (at most three) `ns/name` patterns that match the concrete `ns/name`, most specific
/// first: `ns/name`, `ns/*`, `*/*` (Consul's `intentionMatchGetParams`). A pattern like
/// `*/web` matches nothing: it cannot pass [`validate`] and Consul's match never looks it up.
fn patterns<'a>(ns: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
    let exact = (ns != WILDCARD && name != WILDCARD).then_some((ns, name));
    let ns_wild = (ns != WILDCARD).then_some((ns, WILDCARD));
    [exact, ns_wild, Some((WILDCARD, WILDCARD))]
        .into_iter()
        .flatten()
}

/// `namespace → name → V`, looked up with borrowed `&str`s (no allocation per decision).
#[derive(Debug, Clone)]
struct PairMap<V>(HashMap<Box<str>, HashMap<Box<str>, V>>);

impl<V> Default for PairMap<V> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<V: Default> PairMap<V> {
    fn entry(&mut self, ns: &str, name: &str) -> &mut V {
        self.0
            .entry(ns.into())
            .or_default()
            .entry(name.into())
            .or_default()
    }
}

impl<V> PairMap<V> {
    fn get(&self, ns: &str, name: &str) -> Option<&V> {
        self.0.get(ns)?.get(name)
    }
}

/// Intentions with one destination pattern.
#[derive(Debug, Clone, Default)]
struct DestinationBucket {
    /// Positions in `IntentionSet::intentions`, ascending (so in Consul order).
    all: Vec<usize>,
    /// Source pattern → positions, ascending; the first one decides (denies sort first).
    by_source: PairMap<Vec<usize>>,
}

/// A snapshot of intentions indexed for authorization.
#[derive(Debug, Clone, Default)]
pub struct IntentionSet {
    /// Every intention, precedence recomputed, in [`consul_order`].
    intentions: Vec<Intention>,
    by_destination: PairMap<DestinationBucket>,
    /// Source pattern → positions, ascending.
    by_source: PairMap<Vec<usize>>,
    default: DefaultPolicy,
    /// Compiled L7 permissions (regexes built once), parallel to `intentions`.
    l7: l7::L7Index,
}

impl IntentionSet {
    /// Builds the index. Each intention's `precedence` is recomputed from its source and
    /// destination (it is a read-only field in Consul), so a stale stored value cannot skew a
    /// decision.
    pub fn new(intentions: impl IntoIterator<Item = Intention>, default: DefaultPolicy) -> Self {
        let mut intentions: Vec<Intention> = intentions
            .into_iter()
            .map(|mut i| {
                i.precedence = precedence(
                    &i.source_ns,
                    &i.source_name,
                    &i.destination_ns,
                    &i.destination_name,
                );
                i
            })
            .collect();
        intentions.sort_by(consul_order);

        let mut by_destination: PairMap<DestinationBucket> = PairMap::default();
        let mut by_source: PairMap<Vec<usize>> = PairMap::default();
        for (pos, i) in intentions.iter().enumerate() {
            let bucket = by_destination.entry(&i.destination_ns, &i.destination_name);
            bucket.all.push(pos);
            bucket
                .by_source
                .entry(&i.source_ns, &i.source_name)
                .push(pos);
            by_source.entry(&i.source_ns, &i.source_name).push(pos);
        }
        let l7 = l7::L7Index::build(&intentions);
        Self {
            intentions,
            by_destination,
            by_source,
            default,
            l7,
        }
    }

    /// The policy a connection or request no intention matches gets.
    pub fn default_policy(&self) -> DefaultPolicy {
        self.default
    }

    /// Number of intentions in the snapshot.
    pub fn len(&self) -> usize {
        self.intentions.len()
    }

    /// Whether the snapshot holds no intention (every decision is the default policy's).
    pub fn is_empty(&self) -> bool {
        self.intentions.is_empty()
    }

    /// Every intention, in Consul's list order (precedence, highest first).
    pub fn iter(&self) -> impl Iterator<Item = &Intention> {
        self.intentions.iter()
    }

    /// L4 decision for `src => dst`, both in the default namespace.
    pub fn decide(&self, src: &str, dst: &str) -> Decision {
        self.decide_ns(DEFAULT_NAMESPACE, src, DEFAULT_NAMESPACE, dst)
    }

    /// L4 decision for `src_ns/src => dst_ns/dst`.
    ///
    /// Visits the up-to-nine (destination pattern, source pattern) pairs from most to least
    /// specific. Destination-major order is strictly decreasing precedence (a destination step
    /// is worth 3, a source step at most 2), so the first pair holding an intention decides.
    pub fn decide_ns(&self, src_ns: &str, src: &str, dst_ns: &str, dst: &str) -> Decision {
        match self.deciding(src_ns, src, dst_ns, dst) {
            Some(pos) => Decision::from_intention(&self.intentions[pos]),
            None => Decision::from_default(self.default),
        }
    }

    /// Position of the intention that decides `src_ns/src => dst_ns/dst`, `None` when no
    /// intention matches. Shared by the L4 ([`decide_ns`](Self::decide_ns)) and L7
    /// ([`decide_http`](Self::decide_http)) decisions so both pick the same intention.
    fn deciding(&self, src_ns: &str, src: &str, dst_ns: &str, dst: &str) -> Option<usize> {
        for (dns, dname) in patterns(dst_ns, dst) {
            let Some(bucket) = self.by_destination.get(dns, dname) else {
                continue;
            };
            for (sns, sname) in patterns(src_ns, src) {
                if let Some(&pos) = bucket.by_source.get(sns, sname).and_then(|v| v.first()) {
                    return Some(pos);
                }
            }
        }
        None
    }

    /// Consul's `/v1/connect/intentions/match`: the intentions that apply to `name` (default
    /// namespace) as a source (`by_source`) or as a destination, in evaluation order.
    pub fn matches(&self, by_source: bool, name: &str) -> Vec<&Intention> {
        self.matches_ns(by_source, DEFAULT_NAMESPACE, name)
    }

    /// [`matches`](Self::matches) for `ns/name`.
    pub fn matches_ns(&self, by_source: bool, ns: &str, name: &str) -> Vec<&Intention> {
        let mut positions: Vec<usize> = Vec::new();
        for (pns, pname) in patterns(ns, name) {
            let found = if by_source {
                self.by_source.get(pns, pname)
            } else {
                self.by_destination.get(pns, pname).map(|b| &b.all)
            };
            if let Some(v) = found {
                positions.extend_from_slice(v);
            }
        }
        // Patterns are distinct, so no position repeats; ascending position = Consul order.
        positions.sort_unstable();
        positions.into_iter().map(|p| &self.intentions[p]).collect()
    }
}
