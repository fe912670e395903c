//! Why each intention did or did not decide: the walk behind `meshctl intention match
//! --explain`.
//!
//! Why its own module: an operator reading "denied" needs to see every rule that was looked at,
//! in the order the decider looks at them, and what ruled each one out. The walk reuses the
//! decider's own pieces ([`patterns`](super::patterns) for what a side matches,
//! `IntentionSet::deciding` for which intention decides, the set's [`consul_order`] for the
//! order), so it cannot tell a story the decider would not. Pure code, no I/O.
//!
//! [`consul_order`]: super::consul_order

use std::fmt;

use serde::Serialize;

use super::{IntentionKey, IntentionSet, WILDCARD, patterns};
use crate::model::Intention;

/// Which side of an intention a name is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The calling service (`SourceNS`/`SourceName`).
    Source,
    /// The called service (`DestinationNS`/`DestinationName`).
    Destination,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

/// Why one side of an intention does not match a concrete `ns/name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "Kind", rename_all = "kebab-case")]
pub enum Mismatch {
    /// The intention names another service on this side.
    Name {
        /// The side compared.
        #[serde(rename = "Side")]
        side: Side,
        /// The concrete service name it was compared with.
        #[serde(rename = "Got")]
        got: String,
    },
    /// The names match, but the intention names another namespace on this side: the peer's
    /// namespace comes from its SPIFFE ID (`spiffe://<td>/ns/<ns>/...`).
    Namespace {
        /// The side compared.
        #[serde(rename = "Side")]
        side: Side,
        /// The concrete namespace it was compared with.
        #[serde(rename = "Got")]
        got: String,
    },
    /// `*/name` (a wildcard namespace with an exact name) never matches: `validate` refuses it
    /// and Consul's match never looks it up.
    WildcardNamespaceExactName {
        /// The side holding the pattern.
        #[serde(rename = "Side")]
        side: Side,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Name { side, got } => write!(f, "{} is {got}", side.as_str()),
            Mismatch::Namespace { side, got } => {
                write!(f, "{} namespace is {got}", side.as_str())
            }
            Mismatch::WildcardNamespaceExactName { side } => write!(
                f,
                "{} is */name, which never matches (a wildcard namespace needs a wildcard name)",
                side.as_str()
            ),
        }
    }
}

/// What became of one intention when a pair (or one side) was evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "Outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// It matched both sides and, first in evaluation order, decided.
    Decided,
    /// It matched both sides, but a higher-precedence intention had already decided.
    NotReached {
        /// The intention that decided.
        #[serde(rename = "DecidedBy")]
        by: IntentionKey,
    },
    /// One-side evaluation: it matches the name on that side (so it is among the intentions
    /// the decider looks at for it, in this order).
    Matched {
        /// The side that matched.
        #[serde(rename = "Side")]
        side: Side,
    },
    /// It does not apply.
    NotMatched {
        /// What ruled it out (destination checked first, as the decider indexes by it).
        #[serde(rename = "Why")]
        why: Mismatch,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Decided => f.write_str("matched: decides"),
            Outcome::NotReached { by } => write!(
                f,
                "not reached: a higher-precedence intention decided ({by})"
            ),
            Outcome::Matched { side } => write!(f, "matched as {}", side.as_str()),
            Outcome::NotMatched { why } => write!(f, "not matched: {why}"),
        }
    }
}

/// One intention as the decider considered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Considered<'a> {
    /// The intention, precedence as the set recomputed it.
    pub intention: &'a Intention,
    /// What became of it.
    pub outcome: Outcome,
}

/// `allow`, `deny`, `L7 permissions` or `no action`: what an intention does, in one word.
pub fn action_label(i: &Intention) -> &'static str {
    if !i.permissions.is_empty() {
        "L7 permissions"
    } else {
        i.action.map_or("no action", |a| a.as_str())
    }
}

/// `"web" => "db"  precedence 9  allow  matched: decides  ID <id>`: one line per intention,
/// naming it as the proxy's log does ([`IntentionKey`]'s `Display`).
impl fmt::Display for Considered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.intention;
        write!(
            f,
            "{}  precedence {}  {}  {}",
            IntentionKey::of(i),
            i.precedence,
            action_label(i),
            self.outcome
        )?;
        if !i.id.is_empty() {
            write!(f, "  ID {}", i.id)?;
        }
        Ok(())
    }
}

/// Why the pattern `pat_ns/pat_name` on `side` does not match the concrete `ns/name`, or
/// `None` when it matches (the decider's own [`patterns`]).
fn side_mismatch(
    side: Side,
    pat_ns: &str,
    pat_name: &str,
    ns: &str,
    name: &str,
) -> Option<Mismatch> {
    if patterns(ns, name).any(|p| p == (pat_ns, pat_name)) {
        return None;
    }
    Some(if pat_ns == WILDCARD && pat_name != WILDCARD {
        Mismatch::WildcardNamespaceExactName { side }
    } else if pat_name != WILDCARD && pat_name != name {
        Mismatch::Name {
            side,
            got: name.to_string(),
        }
    } else {
        Mismatch::Namespace {
            side,
            got: ns.to_string(),
        }
    })
}

/// [`side_mismatch`] of intention `i`'s `side`.
fn mismatch(side: Side, i: &Intention, ns: &str, name: &str) -> Option<Mismatch> {
    let (pat_ns, pat_name) = match side {
        Side::Source => (&i.source_ns, &i.source_name),
        Side::Destination => (&i.destination_ns, &i.destination_name),
    };
    side_mismatch(side, pat_ns, pat_name, ns, name)
}

impl IntentionSet {
    /// Every intention of the set, in evaluation order (precedence, highest first), with what
    /// became of it when `src_ns/src => dst_ns/dst` was decided: exactly one is
    /// [`Outcome::Decided`] when [`decide_ns`](Self::decide_ns) names an intention, none when
    /// the default policy decides.
    pub fn explain_ns(
        &self,
        src_ns: &str,
        src: &str,
        dst_ns: &str,
        dst: &str,
    ) -> Vec<Considered<'_>> {
        let decider = self.deciding(src_ns, src, dst_ns, dst);
        let by = decider.map(|p| IntentionKey::of(&self.intentions[p]));
        self.intentions
            .iter()
            .enumerate()
            .map(|(pos, intention)| {
                let why = mismatch(Side::Destination, intention, dst_ns, dst)
                    .or_else(|| mismatch(Side::Source, intention, src_ns, src));
                let outcome = match (why, &by) {
                    (Some(why), _) => Outcome::NotMatched { why },
                    (None, Some(by)) if decider != Some(pos) => {
                        Outcome::NotReached { by: by.clone() }
                    }
                    // Matched and the decider's pick (a match without a pick cannot happen:
                    // `deciding` looks up every pattern `side_mismatch` accepts).
                    (None, _) => Outcome::Decided,
                };
                Considered { intention, outcome }
            })
            .collect()
    }

    /// Every intention of the set, in evaluation order, with whether it applies to `ns/name`
    /// as a source (`by_source`) or as a destination: the ones [`Outcome::Matched`] are
    /// exactly [`matches_ns`](Self::matches_ns)'s answer, in the same order.
    pub fn explain_side(&self, by_source: bool, ns: &str, name: &str) -> Vec<Considered<'_>> {
        let side = if by_source {
            Side::Source
        } else {
            Side::Destination
        };
        self.intentions
            .iter()
            .map(|intention| Considered {
                intention,
                outcome: match mismatch(side, intention, ns, name) {
                    Some(why) => Outcome::NotMatched { why },
                    None => Outcome::Matched { side },
                },
            })
            .collect()
    }

    /// The intention that decides `src_ns/src => dst_ns/dst` (L4 and L7 alike), `None` when
    /// the default policy does.
    pub fn deciding_intention(
        &self,
        src_ns: &str,
        src: &str,
        dst_ns: &str,
        dst: &str,
    ) -> Option<&Intention> {
        self.deciding(src_ns, src, dst_ns, dst)
            .map(|p| &self.intentions[p])
    }
}
