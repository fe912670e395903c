//! Compiled intention sets per destination (issue 17): what `intentions/match?by=destination`
//! and `intentions/check` decide on, built from the destination's own intentions and the `*`
//! ones only (the state's destination lookup), with L7 regexes compiled once, and kept until a
//! write to that destination or to `*` moves its index. A write elsewhere leaves it alone.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fsm::State;
use crate::intentions::IntentionSet;

/// How many destinations' sets are kept; past it the cache starts over (bounded memory
/// whatever names requests ask for).
const MAX_KEPT: usize = 4096;

/// Destination name → (the index it was built at, the set).
#[derive(Default)]
pub struct IntentionSets(Mutex<HashMap<String, (u64, Arc<IntentionSet>)>>);

impl IntentionSets {
    /// The set for destination `name` in `s`: the kept one while its index has not moved,
    /// else built now from the intentions that can match `name`.
    pub fn for_destination(&self, s: &State, name: &str) -> Arc<IntentionSet> {
        let index = s.intentions_index_for(name).max(s.tables.config);
        if let Some((at, set)) = self.0.lock().get(name)
            && *at == index
        {
            return set.clone();
        }
        let set = Arc::new(IntentionSet::new(
            s.intentions_for_destination(name),
            s.default_policy,
        ));
        let mut kept = self.0.lock();
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(name.to_string(), (index, set.clone()));
        set
    }
}
