//! Static mode (`meshproxy run --config FILE`): the proxy without a control plane, for
//! certificates that SPIRE or another SPIFFE issuer writes to disk.
//!
//! The config file is JSON (the workspace has serde_json and no TOML or YAML crate) and names
//! the certificate chain, the PKCS#8 key, the trust bundle, the inbound listener (or a list of
//! named ones, each with its own local application: one identity, several public ports, as an
//! Envoy with several inbound listeners), the allowed source SPIFFE IDs and the upstreams. [`load`] reads and validates all of it and turns it into
//! exactly what the agent loops produce in agent mode (a [`LeafCert`], a [`CaRootList`], a
//! [`Policy`], upstream [`Endpoint`]s and a [`LocalApp`]), so the data path is the same code:
//! [`watch_files`] feeds the same `watch` channels the agent loops feed.
//!
//! Reload: every [`POLL_INTERVAL`] the watcher compares the mtime and length of the config file
//! and of the three PEM files with what it last saw. On a change it loads everything again; a
//! load that fails keeps the previous material and logs one line. New handshakes use the new
//! material, established connections keep theirs, and a changed `allowed_sources` re-checks the
//! live inbound connections like an intention change does.
//!
//! Pieces: `schema` (the file's JSON shape and its validation into a [`StaticConfig`], pure),
//! `pem` (PEM and X.509 loading: the leaf, its key and the trust bundle), `load` ([`load`]:
//! both joined into one [`Loaded`]), `watcher` (the file watcher and the channels it feeds)
//! and `error` ([`StaticConfigError`]). This module only declares them and names what the
//! rest of the proxy uses.

mod error;
mod load;
mod pem;
mod schema;
mod watcher;

pub use error::{StaticConfigError, error_chain};
pub use load::{Loaded, load};
pub use schema::{StaticConfig, StaticInbound, StaticUpstream};
pub use watcher::{EndpointsTx, LocalAppTx, Outputs, POLL_INTERVAL, watch_files};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::path::Path;
    use std::sync::Arc;

    use mesh_policy::spiffe::SpiffeId;
    use tokio::sync::watch;

    use super::schema::{DEFAULT_HANDSHAKE_TIMEOUT, parse_config};
    use super::*;
    use crate::agent::LeafCert;
    use crate::authz::Policy;

    fn parse(json: &str) -> Result<StaticConfig, String> {
        parse_config(Path::new("/etc/mesh/proxy.json"), json.as_bytes())
            .map_err(|e| error_chain(&e))
    }

    const GOOD: &str = r#"{
        "cert": "svid.pem", "key": "/keys/svid_key.pem", "trust_bundle": "bundle.pem",
        "inbound": {"listen": "0.0.0.0:21000", "local_app": "localhost:8080"},
        "allowed_sources": ["spiffe://td/ns/default/dc/dc1/svc/web", "spiffe://td/ns/default/dc/dc2/svc/*"],
        "upstreams": [{"name": "db", "listen": "127.0.0.1:9191",
                       "addresses": ["10.0.0.5:21000", "[::1]:21001", "db.internal:21000"],
                       "spiffe_id": "spiffe://td/ns/default/dc/dc1/svc/db"}],
        "admin": "127.0.0.1:19000",
        "timeouts": {"connect": "2s", "drain": "1m"}
    }"#;

    #[test]
    fn parses_and_resolves_paths() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.cert, Path::new("/etc/mesh/svid.pem"));
        assert_eq!(c.key, Path::new("/keys/svid_key.pem"));
        assert_eq!(c.inbound[0].local_app.host, "localhost");
        assert_eq!(c.inbound[0].name, None);
        assert_eq!(c.upstreams[0].addresses[1].host, "::1");
        assert_eq!(c.upstreams[0].addresses[2].port, 21000);
        assert_eq!(c.data_path.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.data_path.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(c.data_path.drain_timeout, Duration::from_secs(60));
        assert_eq!(c.source_patterns().len(), 2);
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.contains("spiffe://td/ns/default/dc/dc1/svc/db"),
            "{json}"
        );
    }

    #[test]
    fn tls_resumption_is_on_unless_switched_off() {
        assert!(parse(GOOD).unwrap().data_path.tls.resumption);
        let with = |tls: &str| GOOD.replace("\"admin\"", &format!("\"tls\": {tls}, \"admin\""));
        assert!(parse(&with("{}")).unwrap().data_path.tls.resumption);
        assert!(
            !parse(&with(r#"{"resumption": false}"#))
                .unwrap()
                .data_path
                .tls
                .resumption
        );
        let e = parse(&with(r#"{"resume": false}"#)).unwrap_err();
        assert!(e.contains("resume"), "{e}");
    }

    #[test]
    fn protocol_defaults_to_tcp_and_is_validated() {
        use mesh_policy::config_entries::Protocol;
        assert_eq!(parse(GOOD).unwrap().protocol, Protocol::Tcp);
        let with = |p: &str| GOOD.replace("\"admin\"", &format!("\"protocol\": {p}, \"admin\""));
        assert_eq!(parse(&with("\"grpc\"")).unwrap().protocol, Protocol::Grpc);
        let e = parse(&with("\"quic\"")).unwrap_err();
        assert!(e.contains("protocol") && e.contains("quic"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (GOOD.replace("0.0.0.0:21000", "nope"), "inbound.listen"),
            (
                GOOD.replace("localhost:8080", "localhost"),
                "inbound.local_app",
            ),
            (
                GOOD.replace("127.0.0.1:9191", "10.1.1.1:9191"),
                "upstreams[0].listen",
            ),
            (
                GOOD.replace("db.internal:21000", "db internal:1"),
                "upstreams[0].addresses[2]",
            ),
            (GOOD.replace("svc/db\"", "svc/\""), "upstreams[0].spiffe_id"),
            (
                GOOD.replace("dc2/svc/*", "dc2/svc/w*"),
                "allowed_sources[1]",
            ),
            (GOOD.replace("\"1m\"", "\"0s\""), "timeouts.drain"),
            (GOOD.replace("127.0.0.1:19000", "0.0.0.0:19000"), "admin"),
            (GOOD.replace("\"cert\"", "\"certificate\""), "certificate"),
            (GOOD.replace("\"cert\": \"svid.pem\",", ""), "`cert`"),
            ("{".to_string(), "/etc/mesh/proxy.json"),
        ];
        for (json, field) in cases {
            let e = parse(&json).expect_err(field);
            assert!(e.contains(field), "{field}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    /// `GOOD` with `inbound` replaced by `inbound` (JSON).
    fn with_inbound(inbound: &str) -> String {
        GOOD.replace(
            r#"{"listen": "0.0.0.0:21000", "local_app": "localhost:8080"}"#,
            inbound,
        )
    }

    #[test]
    fn inbound_may_be_a_list_of_named_listeners() {
        let c = parse(&with_inbound(
            r#"[{"name": "iperf", "listen": "0.0.0.0:21000", "local_app": "127.0.0.1:5201"},
                {"name": "http", "listen": "127.0.0.1:21001", "local_app": "localhost:8080"},
                {"name": "any1", "listen": "127.0.0.1:0", "local_app": "localhost:8081"},
                {"name": "any2", "listen": "127.0.0.1:0", "local_app": "localhost:8082"}]"#,
        ))
        .unwrap();
        let names: Vec<_> = c.inbound.iter().map(|i| i.name.as_deref()).collect();
        assert_eq!(
            names,
            [Some("iperf"), Some("http"), Some("any1"), Some("any2")]
        );
        assert_eq!(c.inbound[0].local_app.port, 5201);
        assert_eq!(c.inbound[1].listen.port(), 21001);
        // The single-object form may carry a name too.
        let one = parse(&with_inbound(
            r#"{"name": "web", "listen": "0.0.0.0:21000", "local_app": "localhost:8080"}"#,
        ))
        .unwrap();
        assert_eq!(one.inbound[0].name.as_deref(), Some("web"));
    }

    #[test]
    fn inbound_list_refusals_name_the_entry() {
        let l = |a: &str, b: &str| {
            format!(
                r#"[{{"name": "a", "listen": "{a}", "local_app": "127.0.0.1:1"}},
                    {{"name": "b", "listen": "{b}", "local_app": "127.0.0.1:2"}}]"#
            )
        };
        let cases = [
            (with_inbound("[]"), "inbound: the list is empty"),
            (with_inbound("7"), "inbound: must be an object"),
            (
                with_inbound(r#"[{"listen": "127.0.0.1:1", "local_app": "127.0.0.1:2"}]"#),
                "inbound[0].name: missing",
            ),
            (
                with_inbound(&l("127.0.0.1:1", "127.0.0.1:2").replace("\"b\"", "\"a\"")),
                "inbound[1].name: \"a\" is given more than once",
            ),
            (
                with_inbound(&l("127.0.0.1:1", "127.0.0.1:2").replace("\"b\"", "\"b c\"")),
                "inbound[1].name: \"b c\" must be a name",
            ),
            (
                with_inbound(&l("127.0.0.1:7000", "127.0.0.1:7000")),
                "inbound[1].listen: 127.0.0.1:7000 is already used by inbound[0].listen",
            ),
            (
                with_inbound(&l("0.0.0.0:7000", "127.0.0.1:7000")),
                "inbound[1].listen: 127.0.0.1:7000 is already used by inbound[0].listen",
            ),
            (
                with_inbound(&l("127.0.0.1:1", "127.0.0.1:9191")),
                "upstreams[0].listen: 127.0.0.1:9191 is already used by inbound[1].listen",
            ),
            (
                with_inbound(&l("127.0.0.1:19000", "127.0.0.1:2")),
                "admin: 127.0.0.1:19000 is already used by inbound[0].listen",
            ),
            (
                with_inbound(&l("127.0.0.1:1", "nope")),
                "inbound[1].listen: \"nope\"",
            ),
            (
                with_inbound(
                    &l("127.0.0.1:1", "127.0.0.1:2")
                        .replace("local_app\": \"127.0.0.1:2", "local_app\": \"x"),
                ),
                "inbound[1].local_app",
            ),
            (
                with_inbound(
                    &l("127.0.0.1:1", "127.0.0.1:2").replace("\"name\": \"b\"", "\"nam\": \"b\""),
                ),
                "inbound[1]: unknown field `nam`",
            ),
        ];
        for (json, want) in cases {
            let e = parse(&json).expect_err(want);
            assert!(e.contains(want), "{want}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    mod files {
        use super::*;
        use mesh_control::ca::{BuiltinProvider, CaProvider, LeafRequest, generate_csr};
        use std::os::unix::fs::PermissionsExt;
        use time::OffsetDateTime;

        const TD: &str = "11111111-2222-3333-4444-555555555555.consul";

        fn write(path: &Path, text: &str, mode: u32) {
            std::fs::write(path, text).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }

        /// A directory with db's leaf, key, bundle and a config allowing `allowed`.
        fn setup(allowed: &[&str]) -> tempfile::TempDir {
            let dir = tempfile::tempdir().unwrap();
            let root = BuiltinProvider
                .generate_root(TD, 1, OffsetDateTime::now_utc())
                .unwrap();
            let (csr, key) = generate_csr(&SpiffeId::service(TD, "dc1", "db")).unwrap();
            let leaf = BuiltinProvider
                .sign_leaf(
                    &root,
                    &LeafRequest {
                        csr_pem: &csr,
                        trust_domain: TD,
                        datacenter: "dc1",
                        service: "db",
                        ttl: Duration::from_secs(3600),
                    },
                    OffsetDateTime::now_utc(),
                )
                .unwrap();
            write(&dir.path().join("cert.pem"), &leaf.cert_pem, 0o644);
            write(&dir.path().join("key.pem"), &key, 0o600);
            write(&dir.path().join("bundle.pem"), &root.root.root_cert, 0o644);
            write_config(dir.path(), allowed);
            dir
        }

        fn write_config(dir: &Path, allowed: &[&str]) {
            let c = serde_json::json!({
                "cert": "cert.pem", "key": "key.pem", "trust_bundle": "bundle.pem",
                "inbound": {"listen": "127.0.0.1:0", "local_app": "127.0.0.1:1"},
                "allowed_sources": allowed,
            });
            write(&dir.join("proxy.json"), &c.to_string(), 0o644);
        }

        /// The outputs, the policy receiver and the leaf receiver (the watcher stops once that
        /// one is dropped).
        #[allow(
            clippy::type_complexity,
            reason = "a test helper returning two receivers"
        )]
        fn outputs() -> (
            Outputs,
            watch::Receiver<Option<Arc<Policy>>>,
            watch::Receiver<Option<Arc<LeafCert>>>,
        ) {
            let (policy, rx) = watch::channel(None);
            let (leaf, leaf_rx) = watch::channel(None);
            let out = Outputs {
                leaf,
                roots: watch::channel(None).0,
                policy,
                local_apps: Vec::new(),
                endpoints: Vec::new(),
            };
            (out, rx, leaf_rx)
        }

        #[test]
        fn load_checks_the_key_mode() {
            let dir = setup(&[]);
            let provider = crate::app::crypto_provider();
            let config = dir.path().join("proxy.json");
            let l = load(&config, &provider, 1).unwrap();
            assert_eq!(l.id, SpiffeId::service(TD, "dc1", "db"));
            assert_eq!(l.roots.roots.len(), 1);
            let key = dir.path().join("key.pem");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
            let e = error_chain(&load(&config, &provider, 1).unwrap_err());
            assert!(e.starts_with("key: ") && e.contains("0640"), "{e}");
        }

        #[tokio::test]
        async fn watcher_applies_good_reloads_and_keeps_the_old_on_bad_ones() {
            let web = SpiffeId::service(TD, "dc1", "web");
            let dir = setup(&[]);
            let provider = crate::app::crypto_provider();
            let config = dir.path().join("proxy.json");
            let initial = load(&config, &provider, 1).unwrap();
            let (out, mut policy, _leaf) = outputs();
            out.publish(&initial, 1);
            assert!(
                !policy
                    .borrow_and_update()
                    .as_ref()
                    .unwrap()
                    .authorize(&web)
                    .allowed
            );
            let task = tokio::spawn(watch_files(provider, initial, out));

            // A broken config: nothing is published (two polls see it).
            write(&config, "{", 0o644);
            let r = tokio::time::timeout(POLL_INTERVAL * 2, policy.changed()).await;
            assert!(r.is_err(), "a broken config was published");

            write_config(dir.path(), &[&web.uri()]);
            tokio::time::timeout(POLL_INTERVAL * 10, policy.changed())
                .await
                .expect("reload within the poll interval")
                .unwrap();
            let p = policy.borrow_and_update().clone().unwrap();
            assert!(p.authorize(&web).allowed);
            assert!(p.index > 1);
            task.abort();
        }
    }
}
