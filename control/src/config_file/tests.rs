use std::path::Path;

use super::*;

const SERVER_HCL: &str = r#"# a server
datacenter = "east"
node_name  = "s1"
data_dir   = "/var/lib/mesh"
bind_addr  = "10.0.0.5"
client_addr = "127.0.0.1"
server = true
bootstrap_expect = 3
retry_join = ["10.0.0.6:8300", "10.0.0.7:8300"]
addresses {
  http = "0.0.0.0"
}
ports {
  http   = 8501
  server = 8301
}
tls {
  defaults {
    ca_file   = "ca.pem"
    cert_file = "s1.pem"
    key_file  = "s1-key.pem"
    verify_incoming = true
    verify_outgoing = true
  }
  internal_rpc {
    verify_server_hostname = true
  }
}
auto_encrypt {
  allow_tls = true
}
acl {
  enabled = true
  default_policy = "deny"
}
encrypt_key_file = "/etc/mesh/seal.key"
"#;

const SERVER_JSON: &str = r#"{
  "datacenter": "east",
  "node_name": "s1",
  "data_dir": "/var/lib/mesh",
  "bind_addr": "10.0.0.5",
  "client_addr": "127.0.0.1",
  "server": true,
  "bootstrap_expect": 3,
  "retry_join": ["10.0.0.6:8300", "10.0.0.7:8300"],
  "addresses": {"http": "0.0.0.0"},
  "ports": {"http": 8501, "server": 8301},
  "tls": {
    "defaults": {
      "ca_file": "ca.pem", "cert_file": "s1.pem", "key_file": "s1-key.pem",
      "verify_incoming": true, "verify_outgoing": true
    },
    "internal_rpc": {"verify_server_hostname": true}
  },
  "auto_encrypt": {"allow_tls": true},
  "acl": {"enabled": true, "default_policy": "deny"},
  "encrypt_key_file": "/etc/mesh/seal.key"
}"#;

fn parse(name: &str, text: &str, role: Role) -> Result<FileConfig, ConfigFileError> {
    let mut c = FileConfig::default();
    apply_text(&mut c, Path::new(name), text, role)?;
    Ok(c)
}

/// The error's message, which must start with `name:line:`.
fn refused(name: &str, text: &str, role: Role, line: usize) -> String {
    let e = parse(name, text, role).expect_err(text).to_string();
    assert!(e.starts_with(&format!("{name}:{line}: ")), "{e}");
    e
}

#[test]
fn hcl_and_json_give_the_same_config() {
    let hcl = parse("s.hcl", SERVER_HCL, Role::Server).unwrap();
    let json = parse("s.json", SERVER_JSON, Role::Server).unwrap();
    assert_eq!(hcl, json);
    assert_eq!(hcl.datacenter.as_deref(), Some("east"));
    assert_eq!(hcl.node_name.as_deref(), Some("s1"));
    assert_eq!(hcl.bind_addr, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(hcl.http_ip(), Some("0.0.0.0".parse().unwrap()));
    assert_eq!(
        hcl.ports,
        Ports {
            http: Some(8501),
            server: Some(8301)
        }
    );
    assert_eq!(hcl.bootstrap_expect, Some(3));
    assert_eq!(hcl.retry_join, ["10.0.0.6:8300", "10.0.0.7:8300"]);
    assert_eq!(hcl.tls.key_file.as_deref(), Some(Path::new("s1-key.pem")));
    assert_eq!(hcl.auto_encrypt_allow_tls, Some(true));
    assert_eq!(hcl.acl.enabled, Some(true));
    assert_eq!(hcl.acl.default_policy, Some(DefaultPolicy::Deny));
    assert_eq!(
        hcl.encrypt_key_file.as_deref(),
        Some(Path::new("/etc/mesh/seal.key"))
    );
}

#[test]
fn unknown_keys_name_the_file_and_line_in_both_syntaxes() {
    let e = refused(
        "a.hcl",
        "datacenter = \"dc1\"\nports {\n  http = 1\n  htp = 2\n}\n",
        Role::Server,
        4,
    );
    assert!(e.contains("ports.htp is not a configuration key"), "{e}");
    assert!(e.contains("known here: http, server, grpc"), "{e}");
    let e = refused(
        "a.json",
        "{\n  \"datacenter\": \"dc1\",\n  \"ports\": {\n    \"http\": 1,\n    \"htp\": 2\n  }\n}",
        Role::Server,
        5,
    );
    assert!(e.contains("ports.htp is not a configuration key"), "{e}");
    let e = refused("a.json", "{\"log_level\": \"INFO\"}", Role::Agent, 1);
    assert!(e.contains("log_level"), "{e}");
}

#[test]
fn wrong_types_name_the_file_line_and_both_types() {
    let e = refused(
        "t.hcl",
        "node_name = \"n\"\nports {\n  http = \"8500\"\n}\n",
        Role::Server,
        3,
    );
    assert!(
        e.contains("ports.http must be a whole number, found a string"),
        "{e}"
    );
    let e = refused("t.json", "{\n\"server\": \"true\"\n}", Role::Server, 2);
    assert!(
        e.contains("server must be true or false, found a string"),
        "{e}"
    );
    let e = refused("t.json", "{\"retry_join\": \"a\"}", Role::Agent, 1);
    assert!(
        e.contains("must be a list of strings, found a string"),
        "{e}"
    );
    let e = refused("t.hcl", "\n\nports = 8500\n", Role::Server, 3);
    assert!(e.contains("ports must be a block, found a number"), "{e}");
    let e = refused("t.hcl", "ports {\n server = 70000\n}", Role::Server, 2);
    assert!(e.contains("port number from 0 to 65535"), "{e}");
    let e = refused(
        "t.hcl",
        "bind_addr = \"{{ GetPrivateIP }}\"",
        Role::Server,
        1,
    );
    assert!(e.contains("one IP address"), "{e}");
    let e = refused("t.json", "[1]", Role::Server, 1);
    assert!(e.contains("must be an object of configuration keys"), "{e}");
    let e = refused("t.json", "{\n\"datacenter\": \"dc1\",\n}", Role::Server, 3);
    assert!(e.contains("invalid JSON"), "{e}");
}

#[test]
fn verification_cannot_be_turned_off() {
    for (text, line) in [
        ("tls {\n defaults {\n  verify_incoming = false\n }\n}", 3),
        ("tls {\n defaults {\n  verify_outgoing = false\n }\n}", 3),
        (
            "tls {\n internal_rpc {\n  verify_server_hostname = false\n }\n}",
            3,
        ),
    ] {
        let e = refused("v.hcl", text, Role::Server, line);
        assert!(e.contains("cannot be false"), "{e}");
        assert!(e.contains("always verifies"), "{e}");
        parse("v.hcl", &text.replace("false", "true"), Role::Agent).unwrap();
    }
}

#[test]
fn server_must_agree_with_the_subcommand() {
    let e = refused(
        "s.hcl",
        "node_name = \"n\"\nserver = false\n",
        Role::Server,
        2,
    );
    assert!(e.contains("run meshd agent"), "{e}");
    let e = refused("s.json", "{\"server\": true}", Role::Agent, 1);
    assert!(e.contains("run meshd server"), "{e}");
    parse("s.hcl", "server = true", Role::Dev).unwrap();
    parse("s.hcl", "server = false", Role::Agent).unwrap();
}

#[test]
fn role_only_keys_are_refused_elsewhere() {
    for (text, role, says) in [
        (
            "bootstrap_expect = 3",
            Role::Agent,
            "setting of meshd server",
        ),
        ("bootstrap_expect = 1", Role::Dev, "setting of meshd server"),
        ("retry_join = [\"a\"]", Role::Dev, "bootstraps alone"),
        ("ports {\n server = 1\n}", Role::Agent, "no RPC port"),
        (
            "auto_encrypt {\n tls = true\n}",
            Role::Server,
            "agents' side",
        ),
        (
            "auto_encrypt {\n allow_tls = true\n}",
            Role::Agent,
            "servers' side",
        ),
        (
            "acl {\n tokens {\n agent = \"x\"\n }\n}",
            Role::Server,
            "tokens are for",
        ),
        ("encrypt = \"k\"", Role::Agent, "sealing key"),
    ] {
        let e = parse("r.hcl", text, role).expect_err(text).to_string();
        assert!(e.contains("is not taken by meshd"), "{e}");
        assert!(e.contains(says), "{e}");
    }
    let e = refused("g.hcl", "ports {\n grpc = 8502\n}", Role::Server, 2);
    assert!(e.contains("no separate gRPC"), "{e}");
}

#[test]
fn later_files_override_and_lists_concatenate() {
    let mut c = FileConfig::default();
    apply_text(
        &mut c,
        Path::new("1.hcl"),
        "datacenter = \"a\"\nnode_name = \"n\"\nretry_join = [\"x\"]\nencrypt = \"secret-key\"\nacl {\n enabled = true\n}\n",
        Role::Server,
    )
    .unwrap();
    apply_text(
        &mut c,
        Path::new("2.json"),
        r#"{"datacenter": "b", "retry_join": ["y"], "encrypt_key_file": "k", "acl": {"default_policy": "allow"}}"#,
        Role::Server,
    )
    .unwrap();
    assert_eq!(c.datacenter.as_deref(), Some("b"));
    assert_eq!(c.node_name.as_deref(), Some("n"));
    assert_eq!(c.retry_join, ["x", "y"]);
    assert_eq!(
        (c.acl.enabled, c.acl.default_policy),
        (Some(true), Some(DefaultPolicy::Allow))
    );
    // One setting, two spellings: the later file's key file replaces the earlier inline key.
    assert_eq!(
        (c.encrypt.is_none(), c.encrypt_key_file.as_deref()),
        (true, Some(Path::new("k")))
    );
}

#[test]
fn a_key_twice_in_one_block_or_both_key_spellings_are_refused() {
    // HCL's own parser refuses a repeated attribute; a repeated block reaches the decoder.
    let e = refused(
        "d.hcl",
        "datacenter = \"a\"\ndatacenter = \"b\"\n",
        Role::Server,
        2,
    );
    assert!(e.contains("redefined attribute"), "{e}");
    let e = refused(
        "d.hcl",
        "acl {\n enabled = true\n}\nacl {\n default_policy = \"deny\"\n}\n",
        Role::Server,
        4,
    );
    assert!(e.contains("acl is given more than once"), "{e}");
    let e = refused(
        "d.json",
        "{\"acl\": {\"enabled\": true,\n \"enabled\": false}}",
        Role::Server,
        2,
    );
    assert!(e.contains("acl.enabled is given more than once"), "{e}");
    let e = refused(
        "e.hcl",
        "encrypt = \"k\"\nencrypt_key_file = \"f\"\n",
        Role::Server,
        2,
    );
    assert!(e.contains("cannot be used together with encrypt"), "{e}");
}

#[test]
fn secrets_are_never_printed() {
    let c = parse(
        "t.hcl",
        "acl {\n tokens {\n  agent = \"tok-agent-123\"\n  default = \"tok-default-456\"\n }\n}",
        Role::Agent,
    )
    .unwrap();
    assert_eq!(
        c.acl.agent_token.as_ref().map(Secret::expose),
        Some("tok-agent-123")
    );
    let shown = format!("{c:?}");
    assert!(!shown.contains("tok-"), "{shown}");
    let c = parse("s.json", r#"{"encrypt": "c2VjcmV0"}"#, Role::Server).unwrap();
    assert!(!format!("{c:?}").contains("c2VjcmV0"));
}

#[test]
fn directories_read_hcl_and_json_in_lexical_order_after_earlier_sources() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "20-b.json",
        r#"{"datacenter": "from-b", "retry_join": ["b"]}"#,
    );
    write(
        "10-a.hcl",
        "datacenter = \"from-a\"\nretry_join = [\"a\"]\n",
    );
    write("30-notes.txt", "not a config file");
    std::fs::create_dir(dir.path().join("40-sub.hcl")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let first = elsewhere.path().join("first.hcl");
    std::fs::write(&first, "node_name = \"n\"\nretry_join = [\"first\"]\n").unwrap();
    let sources = [
        Source::File(first.clone()),
        Source::Dir(dir.path().to_path_buf()),
        Source::File(first.clone()),
    ];
    let names: Vec<_> = expand(&sources)
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["first.hcl", "10-a.hcl", "20-b.json", "first.hcl"]);
    let c = load(&sources, Role::Server).unwrap();
    assert_eq!(c.datacenter.as_deref(), Some("from-b"));
    assert_eq!(c.retry_join, ["first", "a", "b", "first"]);

    let bad = dir.path().join("x.yaml");
    std::fs::write(&bad, "a: 1").unwrap();
    let e = load(&[Source::File(bad)], Role::Server).unwrap_err();
    assert!(e.to_string().contains("must end in .hcl or .json"), "{e}");
    let e = load(&[Source::Dir(dir.path().join("missing"))], Role::Server).unwrap_err();
    assert!(
        e.to_string().contains("cannot list the config directory"),
        "{e}"
    );
}

#[test]
fn limits_and_cache_bounds_are_read_and_checked() {
    let text = "limits {\n  http_max_conns_per_client = 50\n  http_read_header_timeout = \"2s\"\n  \
                http_max_request_body = 1048576\n}\ncache {\n  max_entries = 100\n  leaf_max_entries = 10\n}\n";
    let c = parse("l.hcl", text, Role::Agent).unwrap();
    let http = c.limits.http();
    assert_eq!(http.max_conns_per_client, 50);
    assert_eq!(http.read_header_timeout, std::time::Duration::from_secs(2));
    assert_eq!(http.max_request_body, 1_048_576);
    assert_eq!(c.limits.cache_max_entries, Some(100));
    assert_eq!(c.limits.leaf_max_entries, Some(10));
    // Unset keys keep the defaults.
    let none = parse("n.hcl", "", Role::Server).unwrap();
    assert_eq!(none.limits.http(), crate::http::HttpLimits::default());

    let e = refused(
        "b.hcl",
        "limits {\n  http_max_conns_per_client = 0\n}\n",
        Role::Server,
        2,
    );
    assert!(e.contains("at least 1"), "{e}");
    let e = refused(
        "b.hcl",
        "limits {\n  http_read_header_timeout = \"soon\"\n}\n",
        Role::Dev,
        2,
    );
    assert!(e.contains("positive duration"), "{e}");
}
