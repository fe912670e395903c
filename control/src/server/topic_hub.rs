//! Watch fan-out in proportion to what changed (issue 17): one task per server follows the
//! applied index and, for each write, re-renders only the watched topics whose own index moved
//! (`topics::index`: the per-service and per-destination indexes of `fsm::indexes`), once,
//! whatever the number of agent streams watching them. Streams share the rendered bytes
//! (`Arc<[u8]>`) through one `watch` channel per topic, so a topic no write touched costs
//! nothing: no render, and no stream wakes.
//!
//! What moved is asked of the state (`State::services_moved_since` and
//! `destinations_moved_since`: O(moved names)); topics that hang off a whole table (roots, ACLs,
//! the default policy and the trust domain for intentions, or every name after a snapshot was
//! installed) are re-checked when that table's index moves.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::topics;
use crate::fsm::{State, TableIndexes};
use crate::intentions::WILDCARD;
use crate::proto::{Topic, TopicKind};
use crate::store::SharedState;

/// A topic's current value: its index and JSON, shared by every stream watching it.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub index: u64,
    pub json: Arc<[u8]>,
    /// FNV-1a of `json`: a stream skips a value equal to the last one it sent.
    pub hash: u64,
}

/// `None` until the topic is [`topics::ready`]; an error when it could not be rendered.
pub type Value = Option<Result<Rendered, String>>;

/// What identifies a topic's value (the `min_index` is each stream's own).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TopicKey {
    kind: i32,
    name: String,
    passing_only: bool,
}

impl TopicKey {
    fn of(t: &Topic) -> Self {
        Self {
            kind: t.kind,
            name: t.name.clone(),
            passing_only: t.passing_only,
        }
    }

    fn topic(&self) -> Topic {
        Topic {
            kind: self.kind,
            name: self.name.clone(),
            passing_only: self.passing_only,
            min_index: 0,
        }
    }
}

/// One watched topic; alive while a stream holds its [`Subscription`].
struct Cell {
    key: TopicKey,
    tx: watch::Sender<Value>,
}

/// A stream's hold on a topic: its receiver, and what keeps the topic rendered.
pub struct Subscription {
    pub rx: watch::Receiver<Value>,
    _cell: Arc<Cell>,
}

struct Inner {
    cells: HashMap<TopicKey, Weak<Cell>>,
    /// The applied index the cells were last brought up to.
    seen: u64,
    tables: TableIndexes,
}

/// The server's watched topics.
pub struct TopicHub {
    state: SharedState,
    inner: Mutex<Inner>,
}

impl TopicHub {
    pub fn new(state: SharedState) -> Self {
        Self {
            state,
            inner: Mutex::new(Inner {
                cells: HashMap::new(),
                seen: 0,
                tables: TableIndexes::default(),
            }),
        }
    }

    /// Watches `t`: its value now (rendered here if no stream watched it yet), then each new
    /// one.
    pub fn subscribe(&self, t: &Topic) -> Subscription {
        let key = TopicKey::of(t);
        let mut inner = self.inner.lock();
        // Topics no stream holds any more are dropped here, not on every write.
        inner.cells.retain(|_, c| c.strong_count() > 0);
        if let Some(cell) = inner.cells.get(&key).and_then(Weak::upgrade) {
            // Up to the state as of now (an index look-up when the hub is), so a watch opened
            // after a write starts from it, as a read would.
            self.state.read(|s| refresh(s, &cell));
            return Subscription {
                rx: cell.tx.subscribe(),
                _cell: cell,
            };
        }
        let cell = Arc::new(Cell {
            key: key.clone(),
            tx: watch::Sender::new(None),
        });
        // Under the lock, so a write applied after this read is one `refresh` still sees.
        self.state.read(|s| refresh(s, &cell));
        inner.cells.insert(key, Arc::downgrade(&cell));
        Subscription {
            rx: cell.tx.subscribe(),
            _cell: cell,
        }
    }

    /// Brings every topic the writes since the last call moved up to date.
    pub fn refresh(&self) {
        let mut inner = self.inner.lock();
        let Inner {
            cells,
            seen,
            tables,
        } = &mut *inner;
        self.state.read(|s| {
            if !cells.is_empty() {
                for cell in affected(s, cells, *seen, tables) {
                    refresh(s, &cell);
                }
            }
            *seen = s.last_index;
            *tables = s.tables;
        });
    }
}

/// Follows the applied index until `shutdown`, refreshing the topics after each change.
pub async fn run(hub: Arc<TopicHub>, shutdown: impl std::future::Future<Output = ()>) {
    let mut applied = hub.state.subscribe();
    tokio::pin!(shutdown);
    loop {
        hub.refresh();
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            () = &mut shutdown => return,
        }
    }
}

/// The cells whose topic may have moved since `seen` (when the tables were `before`).
fn affected(
    s: &State,
    cells: &HashMap<TopicKey, Weak<Cell>>,
    seen: u64,
    before: &TableIndexes,
) -> Vec<Arc<Cell>> {
    let now = &s.tables;
    let services = s.services_moved_since(seen);
    let destinations = s.destinations_moved_since(seen);
    let wildcard = destinations.names.iter().any(|n| n == WILDCARD);
    // Kinds of which every watched topic is checked.
    let whole = |kind: TopicKind| match kind {
        TopicKind::TopicRoots => now.roots != before.roots,
        TopicKind::TopicAcl => now.acl != before.acl,
        TopicKind::TopicHealth => services.all || services.absent,
        TopicKind::TopicIntentions => {
            destinations.all
                || destinations.absent
                || wildcard
                || now.config != before.config
                || now.roots != before.roots
        }
    };
    let mut out: Vec<Arc<Cell>> = Vec::new();
    let mut pick = |key: &TopicKey| {
        if let Some(c) = cells.get(key).and_then(Weak::upgrade) {
            out.push(c);
        }
    };
    let mut whole_kinds = Vec::new();
    for kind in [
        TopicKind::TopicRoots,
        TopicKind::TopicAcl,
        TopicKind::TopicHealth,
        TopicKind::TopicIntentions,
    ] {
        if whole(kind) {
            whole_kinds.push(kind as i32);
        }
    }
    if !whole_kinds.is_empty() {
        cells
            .keys()
            .filter(|k| whole_kinds.contains(&k.kind))
            .for_each(&mut pick);
    }
    let named = |kind: TopicKind, names: &[String]| -> Vec<TopicKey> {
        if whole_kinds.contains(&(kind as i32)) {
            return Vec::new();
        }
        let mut keys = Vec::new();
        for name in names.iter().map(String::as_str).chain(
            // The all-intentions topic moves with any intention.
            (kind == TopicKind::TopicIntentions && !names.is_empty()).then_some(""),
        ) {
            for passing_only in [false, true] {
                keys.push(TopicKey {
                    kind: kind as i32,
                    name: name.to_string(),
                    passing_only,
                });
            }
        }
        keys
    };
    named(TopicKind::TopicHealth, &services.names)
        .iter()
        .chain(&named(TopicKind::TopicIntentions, &destinations.names))
        .for_each(&mut pick);
    out
}

/// Re-renders `cell`'s topic if its index moved past the value held (or none is held yet and
/// it is ready), and tells the streams when the rendering differs.
fn refresh(s: &State, cell: &Cell) {
    let topic = cell.key.topic();
    if !topics::ready(s, &topic) {
        return;
    }
    let index = topics::index(s, &topic);
    let held = cell.tx.borrow().clone();
    if let Some(Ok(r)) = &held
        && r.index >= index
    {
        return;
    }
    let value = topics::render(s, &topic)
        .map(|json| Rendered {
            index,
            hash: crate::hash::fnv1a64(&json),
            json: json.into(),
        })
        .map_err(|e| e.to_string());
    match (&held, &value) {
        // Same bytes at a newer index: no stream needs them; later subscribers see the index.
        (Some(Ok(old)), Ok(new)) if old.hash == new.hash => {
            cell.tx.send_if_modified(|v| {
                *v = Some(value);
                false
            });
        }
        _ => {
            cell.tx.send_replace(Some(value));
        }
    }
}
