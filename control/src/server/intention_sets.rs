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
        let index = s.intentions_index_for(name);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::Command;
    use crate::intentions::intention_between;
    use crate::model::IntentionAction;

    fn allow(state: &mut State, index: u64, src: &str, dst: &str) {
        let intention = crate::model::Intention {
            action: Some(IntentionAction::Allow),
            ..intention_between(src, dst)
        };
        let r = state.apply(
            index,
            Command::IntentionUpsert {
                intention,
                replace: true,
            },
        );
        assert_eq!(r.error, None);
    }

    #[test]
    fn a_set_is_kept_until_a_write_can_change_it() {
        let mut s = State::default();
        allow(&mut s, 1, "web", "db");
        allow(&mut s, 2, "web", "cache");
        let sets = IntentionSets::default();
        let db = sets.for_destination(&s, "db");
        assert_eq!(db.len(), 1, "only db's own intentions are compiled");
        assert!(db.decide("web", "db").allowed);
        // A write to another destination keeps db's set; one to db or to `*` replaces it.
        allow(&mut s, 3, "api", "cache");
        assert!(Arc::ptr_eq(&db, &sets.for_destination(&s, "db")));
        allow(&mut s, 4, "api", "db");
        let db2 = sets.for_destination(&s, "db");
        assert!(!Arc::ptr_eq(&db, &db2) && db2.decide("api", "db").allowed);
        allow(&mut s, 5, "ops", "*");
        let db3 = sets.for_destination(&s, "db");
        assert!(!Arc::ptr_eq(&db2, &db3) && db3.decide("ops", "db").allowed);
        assert_eq!(db3.len(), 3);
    }
}
