//! Lays the configuration files (`--config-file`, `--config-dir`) under `meshd`'s flags.
//!
//! Consul's precedence: a flag given on the command line (or through its environment
//! variable) wins over the files; the files win over the flag's default; lists (`retry_join`)
//! take the files' entries and then the flags', as Consul treats its flags as the last
//! configuration source. Whether a flag was given comes from clap's
//! [`ArgMatches::value_source`]; reading and merging the files is `mesh_control::config_file`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;
use mesh_control::config_file::{self, FileConfig, Role, Secret, Source, TlsFiles};

use super::{AgentArgs, ConfigArgs, DevArgs, ServerArgs, TlsArgs};

/// Which flags of one subcommand were given.
struct Given<'a>(&'a ArgMatches);

/// Reads the subcommand's configuration files, in command-line order.
fn load<'a>(
    matches: &'a ArgMatches,
    args: &ConfigArgs,
    role: Role,
) -> anyhow::Result<(Given<'a>, FileConfig)> {
    let file = config_file::load(&sources(matches, args), role)?;
    Ok((Given(matches), file))
}

impl Given<'_> {
    /// True when the flag with clap id `id` was given (command line or environment).
    fn given(&self, id: &str) -> bool {
        matches!(
            self.0.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    }

    /// Replaces the flag's default in `slot` with the files' value, unless the flag was given.
    fn under<T>(&self, id: &str, slot: &mut T, file: Option<T>) {
        if let Some(v) = file.filter(|_| !self.given(id)) {
            *slot = v;
        }
    }

    /// Same for an address flag, built from the files' IP and port around the default.
    fn under_addr(&self, id: &str, slot: &mut SocketAddr, ip: Option<IpAddr>, port: Option<u16>) {
        let addr = SocketAddr::new(ip.unwrap_or(slot.ip()), port.unwrap_or(slot.port()));
        self.under(id, slot, (ip.is_some() || port.is_some()).then_some(addr));
    }

    /// `--http-addr` from `addresses.http` (else `client_addr`) and `ports.http`.
    fn http(&self, slot: &mut SocketAddr, f: &FileConfig) {
        self.under_addr("http_addr", slot, f.http_ip(), f.ports.http);
    }

    /// A server's `--bind` from `bind_addr` and `ports.server`.
    fn rpc(&self, slot: &mut SocketAddr, f: &FileConfig) {
        self.under_addr("bind", slot, f.bind_addr, f.ports.server);
    }
}

fn tls(tls: &mut TlsArgs, f: TlsFiles) {
    fill(&mut tls.tls_ca_file, f.ca_file);
    fill(&mut tls.tls_cert_file, f.cert_file);
    fill(&mut tls.tls_key_file, f.key_file);
}

/// An optional flag (no default) keeps its value when given, else takes the files'.
fn fill<T>(slot: &mut Option<T>, file: Option<T>) {
    if slot.is_none() {
        *slot = file;
    }
}

/// `--config-file` and `--config-dir` in the order they were given on the command line.
fn sources(matches: &ArgMatches, args: &ConfigArgs) -> Vec<Source> {
    let indexed = |id: &str, paths: &[PathBuf], make: fn(PathBuf) -> Source| {
        let indices = matches.indices_of(id).into_iter().flatten();
        indices
            .zip(paths.iter().cloned().map(make))
            .collect::<Vec<_>>()
    };
    let mut all = indexed("config_file", &args.config_file, Source::File);
    all.extend(indexed("config_dir", &args.config_dir, Source::Dir));
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, s)| s).collect()
}

/// A setting `meshd` cannot start without, from its flag or a file.
pub fn required<T>(v: Option<T>, flag: &str, key: &str) -> anyhow::Result<T> {
    v.with_context(|| format!("missing {flag}: pass it, or set {key} in a config file"))
}

/// `meshd server`. Returns the inline sealing key (`encrypt`) when a file gave one and no
/// `--encrypt-key-file` was.
pub fn server(a: &mut ServerArgs, matches: &ArgMatches) -> anyhow::Result<Option<Secret>> {
    let (g, f) = load(matches, &a.config, Role::Server)?;
    a.limits = f.limits.clone();
    g.rpc(&mut a.bind, &f);
    g.http(&mut a.http_addr, &f);
    fill(&mut a.node, f.node_name);
    fill(&mut a.data_dir, f.data_dir);
    g.under(
        "bootstrap_expect",
        &mut a.bootstrap_expect,
        f.bootstrap_expect,
    );
    a.join.splice(0..0, f.retry_join);
    g.under("datacenter", &mut a.datacenter, f.datacenter);
    g.under(
        "auto_encrypt_allow_tls",
        &mut a.auto_encrypt_allow_tls,
        f.auto_encrypt_allow_tls,
    );
    // `--acl` is the server's default; either ACL flag outranks the files' `acl.enabled`.
    if !g.given("acl") {
        g.under(
            "acl_disabled",
            &mut a.acl_disabled,
            f.acl.enabled.map(|e| !e),
        );
    }
    g.under(
        "acl_default_policy",
        &mut a.acl.acl_default_policy,
        f.acl.default_policy,
    );
    tls(&mut a.tls, f.tls);
    if a.encrypt_key_file.is_some() {
        return Ok(None);
    }
    a.encrypt_key_file = f.encrypt_key_file;
    Ok(f.encrypt)
}

/// `meshd dev`: the server keys that make sense for one throw-away node.
pub fn dev(a: &mut DevArgs, matches: &ArgMatches) -> anyhow::Result<Option<String>> {
    let (g, f) = load(matches, &a.config, Role::Dev)?;
    a.limits = f.limits.clone();
    g.rpc(&mut a.bind, &f);
    g.http(&mut a.http_addr, &f);
    fill(&mut a.data_dir, f.data_dir);
    g.under("node", &mut a.node, f.node_name);
    g.under("acl", &mut a.acl.acl, f.acl.enabled);
    g.under(
        "acl_default_policy",
        &mut a.acl.acl_default_policy,
        f.acl.default_policy,
    );
    Ok(f.datacenter)
}

/// `meshd agent`. Returns the default token (`acl.tokens.default`), which has no flag (Consul
/// sets it through the file or `PUT /v1/agent/token/default`).
pub fn agent(a: &mut AgentArgs, matches: &ArgMatches) -> anyhow::Result<Option<Secret>> {
    let (g, f) = load(matches, &a.config, Role::Agent)?;
    a.limits = f.limits.clone();
    g.http(&mut a.http_addr, &f);
    fill(&mut a.node, f.node_name);
    fill(&mut a.data_dir, f.data_dir);
    g.under("datacenter", &mut a.datacenter, f.datacenter);
    a.servers.splice(0..0, f.retry_join);
    if let Some(ip) = f.bind_addr {
        anyhow::ensure!(
            !ip.is_unspecified(),
            "bind_addr {ip} cannot be an agent's catalog address: set this host's address"
        );
    }
    g.under(
        "address",
        &mut a.address,
        f.bind_addr.map(|ip| ip.to_string()),
    );
    g.under("auto_encrypt", &mut a.auto_encrypt, f.auto_encrypt_tls);
    let token = f.acl.agent_token;
    g.under("token", &mut a.token, token.map(|t| t.expose().to_string()));
    tls(&mut a.tls, f.tls);
    Ok(f.acl.default_token)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::{Cli, Cmd};

    /// Parses `meshd SUBCOMMAND ARGS` as `main` does.
    fn parse(sub: &str, args: &[&str]) -> (Cmd, ArgMatches) {
        let m = Cli::command()
            .try_get_matches_from(["meshd", sub].iter().chain(args))
            .unwrap();
        let cmd = Cli::from_arg_matches(&m).unwrap().command;
        let sub = m.subcommand_matches(sub).unwrap().clone();
        (cmd, sub)
    }

    /// `meshd server ARGS` with the files laid under it.
    fn server_with(args: &[&str]) -> (ServerArgs, Option<Secret>) {
        let (Cmd::Server(mut a), m) = parse("server", args) else {
            panic!("server")
        };
        let encrypt = server(&mut a, &m).unwrap();
        (a, encrypt)
    }

    #[test]
    fn an_agent_takes_servers_address_and_tokens_from_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client.hcl");
        std::fs::write(
            &file,
            "server = false\nnode_name = \"c1\"\nbind_addr = \"10.0.0.9\"\n\
             retry_join = [\"10.0.0.5:8300\"]\nauto_encrypt {\n  tls = true\n}\n\
             acl {\n  tokens {\n    agent = \"agent-secret\"\n    default = \"default-secret\"\n  }\n}\n",
        )
        .unwrap();
        let f = file.display().to_string();
        let (Cmd::Agent(mut a), m) = parse("agent", &["--config-file", &f, "--server", "s:1"])
        else {
            panic!("agent")
        };
        let default = agent(&mut a, &m).unwrap();
        assert_eq!(a.node.as_deref(), Some("c1"));
        assert_eq!(a.servers, ["10.0.0.5:8300", "s:1"]);
        assert_eq!(a.address, "10.0.0.9");
        assert!(a.auto_encrypt);
        assert_eq!(a.token, "agent-secret");
        assert_eq!(default.as_ref().map(Secret::expose), Some("default-secret"));

        std::fs::write(&file, "bind_addr = \"0.0.0.0\"\n").unwrap();
        let (Cmd::Agent(mut a), m) = parse("agent", &["--config-file", &f]) else {
            panic!("agent")
        };
        let e = agent(&mut a, &m).unwrap_err().to_string();
        assert!(e.contains("cannot be an agent's catalog address"), "{e}");
    }

    #[test]
    fn flags_win_files_fill_defaults_lists_add_up_sources_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf.d");
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(
            conf.join("a.hcl"),
            "datacenter = \"from-dir\"\nnode_name = \"dir\"\nretry_join = [\"d:1\"]\n",
        )
        .unwrap();
        let file = dir.path().join("b.json");
        std::fs::write(
            &file,
            r#"{"datacenter": "from-file", "bootstrap_expect": 3, "retry_join": ["f:1"],
                "ports": {"http": 8600, "server": 8400}, "bind_addr": "127.0.0.2",
                "acl": {"enabled": false}, "encrypt": "a2V5",
                "tls": {"defaults": {"ca_file": "ca.pem", "cert_file": "c.pem"}}}"#,
        )
        .unwrap();
        let (dir_s, file_s) = (conf.display().to_string(), file.display().to_string());
        let (a, encrypt) = server_with(&[
            "--config-dir",
            &dir_s,
            "--config-file",
            &file_s,
            "--http-addr",
            "127.0.0.1:9000",
            "--join",
            "flag:1",
            "--tls-cert-file",
            "flag.pem",
        ]);
        // The file given after the directory wins; flags win over both.
        assert_eq!(a.datacenter, "from-file");
        assert_eq!(a.node.as_deref(), Some("dir"));
        assert_eq!(a.http_addr.to_string(), "127.0.0.1:9000");
        assert_eq!(a.bind.to_string(), "127.0.0.2:8400");
        assert_eq!(a.bootstrap_expect, 3);
        assert_eq!(a.join, ["d:1", "f:1", "flag:1"]);
        assert!(a.acl_disabled);
        assert_eq!(a.tls.tls_ca_file.as_deref(), Some(Path::new("ca.pem")));
        assert_eq!(a.tls.tls_cert_file.as_deref(), Some(Path::new("flag.pem")));
        assert_eq!(encrypt.as_ref().map(Secret::expose), Some("a2V5"));

        // Given on the command line, `--encrypt-key-file` and `--acl` outrank the files.
        let (a, encrypt) =
            server_with(&["--config-file", &file_s, "--encrypt-key-file", "k", "--acl"]);
        assert_eq!(
            (encrypt, a.encrypt_key_file.as_deref()),
            (None, Some(Path::new("k")))
        );
        assert!(!a.acl_disabled);
        // No file: every default stays.
        let (a, _) = server_with(&[]);
        assert_eq!(
            (a.datacenter.as_str(), a.bind.to_string()),
            ("dc1", "127.0.0.1:8300".into())
        );
    }
}
