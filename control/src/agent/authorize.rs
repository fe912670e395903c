//! `/v1/agent/connect/authorize`: may the client with this certificate URI connect to the
//! target service? Decided from cached intentions only (no server round trip) by the one
//! decider the proxy also runs ([`crate::authorize::authorize`]), so the endpoint and the data
//! plane give the same answer and the same reason. Pure code.

use serde::{Deserialize, Serialize};

use super::cache::IntentionView;
use crate::spiffe::SpiffeId;

/// Request body (Consul's shape).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AuthorizeRequest {
    #[serde(default)]
    pub target: String,
    #[serde(rename = "ClientCertURI", default)]
    pub client_cert_uri: String,
    #[serde(default)]
    pub client_cert_serial: String,
}

/// Response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuthorizeResponse {
    pub authorized: bool,
    pub reason: String,
}

/// Decides `req` against the intentions cached for its target.
pub fn decide(view: &IntentionView, target: &str, client_cert_uri: &str) -> AuthorizeResponse {
    let deny = |reason: String| AuthorizeResponse {
        authorized: false,
        reason,
    };
    let id = match SpiffeId::parse(client_cert_uri) {
        Ok(id) => id,
        Err(e) => return deny(format!("Invalid ClientCertURI: {e}")),
    };
    let d = crate::authorize::authorize(&view.set, &view.trust_domain, &id, target, None);
    AuthorizeResponse {
        authorized: d.allowed,
        reason: d.reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intentions::{DefaultPolicy, IntentionSet};
    use crate::model::{Intention, IntentionAction};

    fn view(intentions: Vec<Intention>) -> IntentionView {
        IntentionView {
            set: IntentionSet::new(intentions, DefaultPolicy::Deny),
            trust_domain: "td.consul".into(),
            raw: Default::default(),
        }
    }

    fn intention(src: &str, dst: &str, action: IntentionAction) -> Intention {
        serde_json::from_value(serde_json::json!({
            "SourceName": src, "DestinationName": dst, "Action": action,
        }))
        .unwrap()
    }

    #[test]
    fn allows_and_denies_with_reasons() {
        let v = view(vec![
            intention("web", "db", IntentionAction::Allow),
            intention("*", "db", IntentionAction::Deny),
        ]);
        let ok = decide(&v, "db", "spiffe://td.consul/ns/default/dc/dc1/svc/web");
        assert!(ok.authorized);
        assert!(ok.reason.contains("\"web\""), "{}", ok.reason);
        let no = decide(&v, "db", "spiffe://td.consul/ns/default/dc/dc1/svc/api");
        assert!(!no.authorized);
        assert!(no.reason.contains('*'), "{}", no.reason);
        let default = decide(&v, "cache", "spiffe://td.consul/ns/default/dc/dc1/svc/web");
        assert!(!default.authorized);
        let reason = default.reason.to_lowercase();
        assert!(reason.contains("default"), "{reason}");
    }

    #[test]
    fn refuses_bad_and_foreign_identities() {
        let v = view(vec![intention("*", "db", IntentionAction::Allow)]);
        let bad = decide(&v, "db", "not-a-uri");
        assert!(!bad.authorized);
        assert!(
            bad.reason.contains("Invalid ClientCertURI"),
            "{}",
            bad.reason
        );
        let foreign = decide(&v, "db", "spiffe://other.consul/ns/default/dc/dc1/svc/web");
        assert!(!foreign.authorized);
        assert!(
            foreign
                .reason
                .contains(r#"peer is in trust domain "other.consul""#),
            "{}",
            foreign.reason
        );
    }
}
