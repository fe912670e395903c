//! Work only the leader does: writing the servers' internal secret and creating the CA at
//! cluster bootstrap, and pruning rotated-out roots once every leaf they signed has expired.
//! All are proposals through Raft, so a leader change in the middle is harmless
//! (`SetServerSecret` and `CaInitialize` are ignored when a secret / a root already exists).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::Server;
use crate::fsm::{Command, ServerSecret};
use crate::model::CaConfig;

const TICK: Duration = Duration::from_millis(500);

/// The CA configuration a new cluster starts with (Consul's defaults).
pub fn default_ca_config(provider: &str) -> CaConfig {
    let mut config = BTreeMap::new();
    config.insert("LeafCertTTL".to_string(), "72h".into());
    config.insert("RootCertTTL".to_string(), "87600h".into());
    config.insert("PrivateKeyType".to_string(), "ec".into());
    config.insert("PrivateKeyBits".to_string(), 256.into());
    CaConfig {
        provider: provider.to_string(),
        config,
        create_index: 0,
        modify_index: 0,
    }
}

pub(super) async fn run(server: Arc<Server>) {
    let mut shutdown = std::pin::pin!(server.shutdown_signal());
    let mut metrics = server.raft.metrics();
    loop {
        let was_leader = metrics.borrow().current_leader == Some(server.id);
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(TICK) => {}
            // A new leader creates the CA at once, not a tick later: until it exists the
            // server is not ready (issue 10 point 2).
            r = metrics.wait_for(|m| (m.current_leader == Some(server.id)) != was_leader) => {
                if r.is_err() {
                    return;
                }
            }
        }
        let is_leader = server.raft.metrics().borrow().current_leader == Some(server.id);
        if let Err(e) = server.check_liveness(is_leader).await {
            tracing::warn!(error = %e, "liveness check");
        }
        if !is_leader {
            continue;
        }
        if let Err(e) = tick(&server).await {
            tracing::warn!(error = %e, "leader task");
        }
    }
}

/// A new random internal secret: 32 bytes from the OS-seeded CSPRNG, as 64 hex digits.
fn new_server_secret() -> Result<ServerSecret, crate::fsm::MalformedSecret> {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ServerSecret::new(hex)
}

async fn tick(server: &Server) -> Result<(), super::ServerError> {
    let (has_secret, has_root, prunable) = server.state.read(|s| {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        (
            s.server_secret.is_some(),
            !s.ca.roots.is_empty(),
            s.ca.prune_after.values().any(|t| *t < now),
        )
    });
    // Before the CA: a server that applied the root (is ready) holds the secret too.
    if !has_secret {
        tracing::info!("writing the servers' internal secret");
        let secret = new_server_secret()
            .map_err(|e| crate::fsm::ApplyError::from(crate::fsm::Invalid::from(e)))?;
        server.write(Command::SetServerSecret { secret }).await?;
    }
    if !has_root {
        let cluster_id = uuid::Uuid::new_v4().to_string();
        let td = format!("{cluster_id}.consul");
        let root = server.ca.generate_root(&td, 1, OffsetDateTime::now_utc())?;
        // Sealed here, before it is part of a command: the log never holds the key in clear.
        let root = crate::seal::root::seal(server.config.encrypt_key.as_ref(), root)?;
        tracing::info!(trust_domain = %td, root = %root.root.id, "initializing CA");
        server
            .write(Command::CaInitialize {
                cluster_id,
                root: Box::new(root),
                config: default_ca_config(server.ca.name()),
            })
            .await?;
    } else if prunable {
        server
            .write(Command::CaPruneRoots {
                now_unix: OffsetDateTime::now_utc().unix_timestamp(),
            })
            .await?;
    }
    Ok(())
}
