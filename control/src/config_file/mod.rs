//! `meshd server|agent|dev --config-file F --config-dir D`: configuration files with Consul's
//! key names, so an operator's Consul agent configuration reads here with the keys we support.
//!
//! Why a module of its own: reading, merging and refusing are pure decisions on text (one
//! function per step, no clap, no sockets); `meshd` only lists the sources and lays the merged
//! [`FileConfig`] under its flags (flags win, as in Consul).
//!
//! Rules (Consul's "Agent configuration files"):
//!
//! * A file is HCL when its name ends in `.hcl` and JSON when it ends in `.json`; anything
//!   else is refused. A directory contributes every `.hcl` and `.json` file directly in it
//!   (not its subdirectories), in lexical order of the file names.
//! * Sources are read in command-line order (`--config-file` and `--config-dir` interleaved as
//!   given). A later file overrides an earlier one key by key; lists (`retry_join`) are
//!   concatenated. `encrypt` and `encrypt_key_file` are one setting (the key, or the file
//!   holding it): a later file giving either replaces whichever an earlier one gave.
//! * Unknown keys, values of the wrong type, a key given twice in one block, and keys the
//!   running command does not take (`bootstrap_expect` for an agent) are errors naming the file
//!   and the line, for JSON as for HCL ([`mesh_policy::spanned`] keeps every key's line).
//! * `server` must agree with the subcommand (`true` for `meshd server` and `meshd dev`, `false`
//!   for `meshd agent`): a file written for the other role is refused, not half-applied.
//! * **Secure by default:** this build always verifies certificates when TLS is configured:
//!   servers require and check client certificates, and every outgoing connection checks
//!   the server name `server.<dc>.mesh`. `verify_incoming`, `verify_outgoing` and
//!   `verify_server_hostname` therefore accept `true` (what Consul operators write to get this)
//!   and refuse `false` with the reason, instead of silently ignoring a request to weaken TLS.
//! * Secrets (`encrypt`, ACL tokens) are held in [`Secret`], which never prints its value;
//!   no error message quotes a value of these keys.

mod decode;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use mesh_policy::spanned::{self, SyntaxError};

use crate::intentions::DefaultPolicy;

/// Which `meshd` subcommand reads the files: it decides `server` and the role-only keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Dev,
    Agent,
}

impl Role {
    fn command(self) -> &'static str {
        match self {
            Role::Server => "meshd server",
            Role::Dev => "meshd dev",
            Role::Agent => "meshd agent",
        }
    }
}

/// One `--config-file` or `--config-dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Dir(PathBuf),
}

/// A secret from a file (`encrypt`, an ACL token): compared in constant time, never printed.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Secret {}

/// `ports { ... }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ports {
    /// `ports.http`: the HTTP API port.
    pub http: Option<u16>,
    /// `ports.server`: the RPC port (Raft, joins, agents), our `--bind` port.
    pub server: Option<u16>,
}

/// `tls { defaults { ... } }`: the certificate files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `acl { ... }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    pub enabled: Option<bool>,
    pub default_policy: Option<DefaultPolicy>,
    /// `acl.tokens.agent` (`meshd agent` only).
    pub agent_token: Option<Secret>,
    /// `acl.tokens.default` (`meshd agent` only).
    pub default_token: Option<Secret>,
}

/// `limits { ... }` (HTTP API resources, see `crate::http::serve`) and `cache { ... }` (the
/// agent's cache bounds): no flags, files only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `limits.http_max_conns_per_client` (Consul's key and default, 200).
    pub http_max_conns_per_client: Option<usize>,
    /// `limits.http_read_header_timeout`: also the idle keep-alive timeout.
    pub http_read_header_timeout: Option<std::time::Duration>,
    /// `limits.http_max_request_body`, in bytes.
    pub http_max_request_body: Option<usize>,
    /// `cache.max_entries`: the agent cache's bound.
    pub cache_max_entries: Option<usize>,
    /// `cache.leaf_max_entries`: the bound on cached leaf certificates.
    pub leaf_max_entries: Option<usize>,
}

impl Limits {
    /// The HTTP limits: the files' values over the defaults.
    pub fn http(&self) -> crate::http::HttpLimits {
        let d = crate::http::HttpLimits::default();
        crate::http::HttpLimits {
            read_header_timeout: self
                .http_read_header_timeout
                .unwrap_or(d.read_header_timeout),
            max_conns_per_client: self
                .http_max_conns_per_client
                .unwrap_or(d.max_conns_per_client),
            max_request_body: self.http_max_request_body.unwrap_or(d.max_request_body),
        }
    }

    /// Lays these limits over an agent's configuration.
    pub fn apply_to_agent(&self, c: &mut crate::agent::AgentConfig) {
        c.http_limits = self.http();
        if let Some(n) = self.cache_max_entries {
            c.cache_max_entries = n;
        }
        if let Some(n) = self.leaf_max_entries {
            c.leaf_max_entries = n;
        }
    }
}

/// What the files say, merged; `None` where no file set the key. Flags override every field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub datacenter: Option<String>,
    pub node_name: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `bind_addr`: the RPC address of a server; the catalog address of an agent.
    pub bind_addr: Option<IpAddr>,
    /// `client_addr`: the HTTP API's address unless `addresses.http` says otherwise.
    pub client_addr: Option<IpAddr>,
    /// `addresses.http`.
    pub http_address: Option<IpAddr>,
    pub ports: Ports,
    pub bootstrap_expect: Option<usize>,
    /// `retry_join`, concatenated over the files: servers' RPC addresses.
    pub retry_join: Vec<String>,
    pub tls: TlsFiles,
    /// `auto_encrypt.allow_tls` (servers).
    pub auto_encrypt_allow_tls: Option<bool>,
    /// `auto_encrypt.tls` (agents).
    pub auto_encrypt_tls: Option<bool>,
    pub acl: AclFile,
    /// `encrypt`: the key sealing CA private keys, inline (base64). At most one of `encrypt`
    /// and `encrypt_key_file` is set.
    pub encrypt: Option<Secret>,
    /// `encrypt_key_file`: the file holding that key.
    pub encrypt_key_file: Option<PathBuf>,
    pub limits: Limits,
}

impl FileConfig {
    /// The HTTP API's IP from the files: `addresses.http`, else `client_addr`.
    pub fn http_ip(&self) -> Option<IpAddr> {
        self.http_address.or(self.client_addr)
    }
}

/// What is wrong at one place in a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("is not a configuration key meshd knows here (known here: {known}; see README.md)")]
    UnknownKey { known: String },
    #[error("must be {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("must be {expected}")]
    InvalidValue { expected: &'static str },
    #[error("is given more than once in this block")]
    Duplicate,
    #[error("{0}")]
    Refused(&'static str),
    #[error("is not taken by {command}: {why}")]
    WrongRole {
        command: &'static str,
        why: &'static str,
    },
    #[error("cannot be used together with {other} in one file: give the key or the file")]
    Exclusive { other: &'static str },
}

/// Why the configuration files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot list the config directory: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: a config file must end in .hcl or .json", path.display())]
    Extension { path: PathBuf },
    #[error("{}:{}: {source}", path.display(), source.line)]
    Syntax { path: PathBuf, source: SyntaxError },
    #[error("{}:{line}: {key} {problem}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        /// The key's path, e.g. `tls.defaults.verify_incoming`.
        key: String,
        problem: Problem,
    },
}

/// The files `sources` name, in the order they are read: each `File` as given, each `Dir`'s
/// `.hcl` and `.json` files in lexical order.
pub fn expand(sources: &[Source]) -> Result<Vec<PathBuf>, ConfigFileError> {
    let mut files = Vec::new();
    for s in sources {
        match s {
            Source::File(p) => files.push(p.clone()),
            Source::Dir(d) => {
                let read_dir = |source| ConfigFileError::ReadDir {
                    path: d.clone(),
                    source,
                };
                let mut in_dir = Vec::new();
                for entry in std::fs::read_dir(d).map_err(read_dir)? {
                    let path = entry.map_err(read_dir)?.path();
                    // Follows symlinks, as Consul; subdirectories are not read.
                    if format_of(&path).is_some() && path.is_file() {
                        in_dir.push(path);
                    }
                }
                in_dir.sort();
                files.extend(in_dir);
            }
        }
    }
    Ok(files)
}

/// Reads and merges `sources` for `role`. No sources gives the empty configuration.
pub fn load(sources: &[Source], role: Role) -> Result<FileConfig, ConfigFileError> {
    let mut config = FileConfig::default();
    for path in expand(sources)? {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
            path: path.clone(),
            source,
        })?;
        apply_text(&mut config, &path, &text, role)?;
    }
    Ok(config)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Hcl,
    Json,
}

fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()? {
        "hcl" => Some(Format::Hcl),
        "json" => Some(Format::Json),
        _ => None,
    }
}

/// Parses one file's `text` (its format from `path`'s extension) and lays it over `config`.
pub fn apply_text(
    config: &mut FileConfig,
    path: &Path,
    text: &str,
    role: Role,
) -> Result<(), ConfigFileError> {
    let format = format_of(path).ok_or_else(|| ConfigFileError::Extension {
        path: path.to_path_buf(),
    })?;
    let tree = match format {
        Format::Hcl => spanned::parse_hcl(text),
        Format::Json => spanned::parse_json(text),
    }
    .map_err(|source| ConfigFileError::Syntax {
        path: path.to_path_buf(),
        source,
    })?;
    decode::apply(config, &tree, role).map_err(|e| ConfigFileError::Invalid {
        path: path.to_path_buf(),
        line: e.line.unwrap_or(1),
        key: e.key,
        problem: e.problem,
    })
}

#[cfg(test)]
mod tests;
