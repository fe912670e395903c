//! Agent mode's policy snapshot, composed from four feeds: the intentions of the local
//! service (as the agent serves them), the CA roots (whose trust domain stands in when an
//! intentions body carries none), the declared protocol and the mesh's request normalization
//! (the `mesh` config entry).
//!
//! The snapshot is recomputed whenever any of them changes. Reading the roots' trust domain
//! once, when an intentions answer is decoded, froze whatever was known at that moment: a
//! sidecar started in the first second of a dev server kept a trust domain of `""` until the
//! intentions changed, and refused every peer as foreign (issue 10 point 2). With no trust
//! domain from either feed there is no snapshot ([`AuthzError::NoTrustDomain`]): the proxy is
//! not ready (its listeners wait, its admin `/ready` says what is missing), and a proxy that
//! was serving fails closed (new connections refused, L7 requests denied) until a feed brings
//! one. Each not-ready episode is logged once.

use std::sync::Arc;

use bytes::Bytes;
use mesh_policy::intentions::normalize::RequestNormalization;
use mesh_policy::model::CaRootList;
use tokio::sync::watch;

use crate::authz::{AuthzError, Policy};
use mesh_policy::config_entries::Protocol;

/// An intentions answer of the agent, undecoded (decoded with the other feeds in [`run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIntentions {
    /// `X-Consul-Index` of the answer.
    pub index: u64,
    pub body: Bytes,
}

/// What the last published snapshot was made of (nothing is re-sent when it is unchanged, so
/// an unrelated roots change does not re-check every live connection).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inputs {
    intentions: Arc<AgentIntentions>,
    fallback_trust_domain: String,
    protocol: Protocol,
    normalization: RequestNormalization,
}

/// The feeds a snapshot is made of. A feed whose sender is gone keeps its last value (a fixed
/// `--protocol` comes on a channel whose sender is already dropped).
#[derive(Debug)]
pub struct Feeds {
    pub intentions: watch::Receiver<Option<Arc<AgentIntentions>>>,
    pub roots: watch::Receiver<Option<Arc<CaRootList>>>,
    pub protocol: watch::Receiver<Option<Protocol>>,
    pub normalization: watch::Receiver<Option<RequestNormalization>>,
}

/// Publishes on `out` the policy for `destination`, recomputed whenever the intentions, the
/// roots, the protocol or the request normalization change, until the intentions feed or
/// `out` closes.
pub async fn run(destination: String, feeds: Feeds, out: watch::Sender<Option<Arc<Policy>>>) {
    let Feeds {
        mut intentions,
        mut roots,
        mut protocol,
        mut normalization,
    } = feeds;
    let (mut protocol_open, mut roots_open, mut normalization_open) = (true, true, true);
    let mut last: Option<Inputs> = None;
    let mut not_ready = false;
    // One round per change of a feed; ends when the intentions feed or `out` closes.
    loop {
        let i = intentions.borrow_and_update().clone();
        let fallback_trust_domain = roots
            .borrow_and_update()
            .as_ref()
            .map(|r| r.trust_domain.clone())
            .unwrap_or_default();
        let p = *protocol.borrow_and_update();
        let n = *normalization.borrow_and_update();
        if let (Some(intentions), Some(protocol), Some(normalization)) = (i, p, n) {
            let inputs = Inputs {
                intentions,
                fallback_trust_domain,
                protocol,
                normalization,
            };
            if last.as_ref() != Some(&inputs) {
                publish(&destination, &inputs, &out, &mut not_ready);
                last = Some(inputs);
            }
        }
        tokio::select! {
            r = intentions.changed() => if r.is_err() { return },
            r = roots.changed(), if roots_open => roots_open = r.is_ok(),
            r = protocol.changed(), if protocol_open => protocol_open = r.is_ok(),
            r = normalization.changed(), if normalization_open => normalization_open = r.is_ok(),
            () = out.closed() => return,
        }
    }
}

fn publish(
    destination: &str,
    inputs: &Inputs,
    out: &watch::Sender<Option<Arc<Policy>>>,
    not_ready: &mut bool,
) {
    let i = &inputs.intentions;
    match Policy::from_agent_json(destination, &inputs.fallback_trust_domain, i.index, &i.body) {
        Ok(policy) => {
            if std::mem::take(not_ready) {
                tracing::info!(trust_domain = %policy.trust_domain, index = i.index, "intentions usable again: trust domain known");
            }
            out.send_replace(Some(Arc::new(
                policy
                    .with_protocol(inputs.protocol)
                    .with_normalization(inputs.normalization),
            )));
        }
        Err(e @ AuthzError::NoTrustDomain { .. }) => {
            if !std::mem::replace(not_ready, true) {
                tracing::warn!(index = i.index, error = %e, "not ready: denying every peer until the trust domain is known; waiting for the next intentions or roots update");
            }
            // Fail closed: no snapshot, nobody is authorized.
            out.send_if_modified(|p| p.take().is_some());
        }
        Err(e) => {
            tracing::warn!(index = i.index, error = %e, "ignoring undecodable intentions; keeping the last policy");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(index: u64, trust_domain: &str) -> Option<Arc<AgentIntentions>> {
        let body = format!(
            r#"{{"DefaultPolicy":"deny","TrustDomain":"{trust_domain}","Intentions":[{{"SourceName":"web","DestinationName":"db","Action":"allow"}}]}}"#
        );
        Some(Arc::new(AgentIntentions {
            index,
            body: body.into(),
        }))
    }

    fn roots(trust_domain: &str) -> Option<Arc<CaRootList>> {
        Some(Arc::new(CaRootList {
            active_root_id: String::new(),
            trust_domain: trust_domain.to_string(),
            roots: vec![],
        }))
    }

    /// The test's ends of the feeds.
    struct Senders {
        intentions: watch::Sender<Option<Arc<AgentIntentions>>>,
        roots: watch::Sender<Option<Arc<CaRootList>>>,
        protocol: watch::Sender<Option<Protocol>>,
        normalization: watch::Sender<Option<RequestNormalization>>,
        out: watch::Receiver<Option<Arc<Policy>>>,
    }

    fn start() -> Senders {
        let (intentions, irx) = watch::channel(None);
        let (roots, rrx) = watch::channel(None);
        let (protocol, prx) = watch::channel(None);
        let (normalization, nrx) = watch::channel(Some(RequestNormalization::default()));
        let (otx, out) = watch::channel(None);
        let feeds = Feeds {
            intentions: irx,
            roots: rrx,
            protocol: prx,
            normalization: nrx,
        };
        tokio::spawn(run("db".into(), feeds, otx));
        Senders {
            intentions,
            roots,
            protocol,
            normalization,
            out,
        }
    }

    async fn next(
        out: &mut watch::Receiver<Option<Arc<Policy>>>,
        f: impl Fn(&Policy) -> bool,
    ) -> Arc<Policy> {
        tokio::time::timeout(
            Duration::from_secs(5),
            out.wait_for(|p| p.as_ref().is_some_and(|p| f(p))),
        )
        .await
        .expect("a policy within 5 s")
        .unwrap()
        .clone()
        .unwrap()
    }

    #[tokio::test]
    async fn no_trust_domain_is_not_ready_until_roots_or_intentions_bring_one() {
        let mut f = start();
        f.protocol.send_replace(Some(Protocol::Tcp));
        f.intentions.send_replace(answer(3, ""));
        // Neither feed names the trust domain: no policy (not ready, fail closed).
        tokio::task::yield_now().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(200), f.out.wait_for(Option::is_some))
                .await
                .is_err(),
            "a policy without a trust domain was published"
        );
        // The roots arrive later: the same intentions are decided with their trust domain.
        f.roots.send_replace(roots("abc.consul"));
        let p = next(&mut f.out, |_| true).await;
        assert_eq!((p.index, p.trust_domain.as_str()), (3, "abc.consul"));
        let web = mesh_policy::spiffe::SpiffeId::service("abc.consul", "dc1", "web");
        assert!(p.authorize(&web).allowed);
        // The snapshot's own trust domain wins once it has one.
        f.intentions.send_replace(answer(4, "def.consul"));
        let p = next(&mut f.out, |p| p.index == 4).await;
        assert_eq!(p.trust_domain, "def.consul");
    }

    #[tokio::test]
    async fn a_serving_proxy_fails_closed_when_the_trust_domain_goes_missing() {
        let mut f = start();
        f.protocol.send_replace(Some(Protocol::Http));
        f.intentions.send_replace(answer(1, "abc.consul"));
        next(&mut f.out, |p| p.index == 1).await;
        f.intentions.send_replace(answer(2, ""));
        tokio::time::timeout(Duration::from_secs(5), f.out.wait_for(Option::is_none))
            .await
            .expect("policy withdrawn")
            .unwrap();
        f.intentions.send_replace(answer(3, "abc.consul"));
        let p = next(&mut f.out, |p| p.index == 3).await;
        assert_eq!(p.protocol, Protocol::Http);
    }

    #[tokio::test]
    async fn protocol_is_stamped_on_every_snapshot() {
        let mut f = start();
        f.intentions.send_replace(answer(1, "td"));
        // The protocol arrives after the intentions.
        f.protocol.send_replace(Some(Protocol::Http));
        let p = next(&mut f.out, |_| true).await;
        assert_eq!((p.index, p.protocol), (1, Protocol::Http));
        f.protocol.send_replace(Some(Protocol::Tcp));
        let p = next(&mut f.out, |p| p.protocol == Protocol::Tcp).await;
        assert_eq!(p.index, 1);
        // A fixed protocol (sender dropped) keeps applying to new intentions.
        drop(f.protocol);
        f.intentions.send_replace(answer(2, "td"));
        let p = next(&mut f.out, |p| p.index == 2).await;
        assert_eq!(p.protocol, Protocol::Tcp);
        // A mesh entry change is stamped on the same snapshot; without a known normalization
        // there is no snapshot at all.
        let strict = RequestNormalization {
            merge_slashes: true,
            ..Default::default()
        };
        f.normalization.send_replace(Some(strict));
        let p = next(&mut f.out, |p| p.normalization.merge_slashes).await;
        assert_eq!((p.index, p.normalization), (2, strict));
    }
}
