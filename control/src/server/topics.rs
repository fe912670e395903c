//! What a watch topic reads from the state: its index (for "has it changed since N") and its
//! rendering (the JSON an agent caches). Pure functions over `State`, shared by the single-topic
//! watch RPCs and the multi-topic `Watch` stream.

use crate::fsm::State;
use crate::proto::{Topic, TopicKind};
use crate::wire::IntentionsSnapshot;

/// Index of what a topic reads: the whole table for roots and ACLs; the intentions of its
/// destination and of `*` (and the default policy) for intentions; the health of its service
/// (Consul's per-service index) for health. A write elsewhere leaves it where it was.
pub fn index(s: &State, t: &Topic) -> u64 {
    match t.kind() {
        TopicKind::TopicRoots => s.tables.roots,
        TopicKind::TopicIntentions => s.intentions_index_for(&t.name),
        TopicKind::TopicHealth => s.service_index(&t.name),
        TopicKind::TopicAcl => s.tables.acl,
    }
    .max(1)
}

/// Whether the topic can be rendered yet. An intentions snapshot carries the trust domain the
/// proxies check peers against, and that exists only once the CA is initialized: one sent
/// before would tell every proxy that this mesh is `""` and make it refuse every peer (issue 10
/// point 2). It is withheld until then; the CA's own write moves the roots table, on which
/// `topic_hub` re-checks every intentions topic, and sends it.
pub fn ready(s: &State, t: &Topic) -> bool {
    match t.kind() {
        TopicKind::TopicIntentions => !s.ca.trust_domain.is_empty(),
        TopicKind::TopicRoots | TopicKind::TopicHealth | TopicKind::TopicAcl => true,
    }
}

/// The topic's current value as JSON.
pub fn render(s: &State, t: &Topic) -> serde_json::Result<Vec<u8>> {
    match t.kind() {
        TopicKind::TopicRoots => serde_json::to_vec(&s.ca.root_list()),
        TopicKind::TopicIntentions => serde_json::to_vec(&IntentionsSnapshot::for_destination(
            s.intentions_for_destination(&t.name),
            &t.name,
            s.default_policy,
            &s.ca.trust_domain,
        )),
        TopicKind::TopicHealth => {
            serde_json::to_vec(&s.health_entries(&t.name, true, t.passing_only))
        }
        // Only the index matters (it moves on every ACL write); the body says which one.
        TopicKind::TopicAcl => serde_json::to_vec(&serde_json::json!({ "Index": s.tables.acl })),
    }
}
