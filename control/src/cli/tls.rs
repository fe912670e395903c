//! `meshctl tls ca create` and `meshctl tls cert create`: the control plane's CA and its server
//! and client certificates as files in the current directory, as Consul's `consul tls …` makes
//! them (`mesh-agent-ca.pem`, `dc1-server-mesh-0.pem`, …). No server is contacted.
//!
//! Nothing is ever overwritten: every file is created with `O_EXCL`. A second `ca create` in the
//! same directory is refused; `cert create` takes the next free index (`-0`, `-1`, …) as
//! Consul does. Private keys are created mode 0600, certificates 0644.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use time::OffsetDateTime;

use crate::tls::pki::{
    self, CertRequest, DEFAULT_CA_DAYS, DEFAULT_CERT_DAYS, DEFAULT_DOMAIN, PkiError, Role,
};

/// Why a `tls` command wrote nothing (or stopped after the files it reported saved).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{0} already exists: refusing to overwrite a CA")]
    CaExists(String),
    #[error("no free {0}-N.pem name")]
    NoFreeName(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How many `<dc>-<role>-<domain>-N` names `cert create` tries before giving up.
const MAX_CERT_INDEX: u32 = 10_000;

#[derive(Subcommand)]
pub enum TlsCmd {
    /// The control plane's CA.
    Ca {
        #[command(subcommand)]
        command: CaCmd,
    },
    /// Server and client certificates signed by that CA.
    Cert {
        #[command(subcommand)]
        command: CertCmd,
    },
}

#[derive(Subcommand)]
pub enum CaCmd {
    /// Writes `<domain>-agent-ca.pem` and `<domain>-agent-ca-key.pem` (0600).
    Create {
        /// Days the CA is valid.
        #[arg(long, default_value_t = DEFAULT_CA_DAYS)]
        days: u32,
        /// Domain of the control plane's names (`server.<dc>.<domain>`).
        #[arg(long, default_value = DEFAULT_DOMAIN)]
        domain: String,
    },
}

#[derive(Subcommand)]
pub enum CertCmd {
    /// Writes `<dc>-<server|client>-<domain>-N.pem` and its `-key.pem` (0600).
    Create(CertArgs),
}

#[derive(Args)]
pub struct CertArgs {
    /// A server certificate (`server.<dc>.<domain>`).
    #[arg(long, conflicts_with = "client", required_unless_present = "client")]
    server: bool,
    /// A client (agent) certificate (`client.<dc>.<domain>`).
    #[arg(long)]
    client: bool,
    #[arg(long, default_value = "dc1")]
    dc: String,
    #[arg(long, default_value = DEFAULT_DOMAIN)]
    domain: String,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = DEFAULT_CERT_DAYS)]
    days: u32,
    /// The CA certificate (default `<domain>-agent-ca.pem`).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The CA key (default `<domain>-agent-ca-key.pem`).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Another DNS name for the certificate (repeatable).
    #[arg(long = "additional-dnsname")]
    additional_dnsname: Vec<String>,
    /// Another IP address for the certificate (repeatable).
    #[arg(long = "additional-ipaddress")]
    additional_ipaddress: Vec<IpAddr>,
}

/// Runs a `tls` command in the current directory.
pub fn run(cmd: TlsCmd) -> Result<i32, TlsError> {
    match cmd {
        TlsCmd::Ca {
            command: CaCmd::Create { days, domain },
        } => {
            let ca = pki::create_ca(&domain, days, OffsetDateTime::now_utc())?;
            let cert = format!("{domain}-agent-ca.pem");
            let key = format!("{domain}-agent-ca-key.pem");
            if let Some(existing) = [&cert, &key].into_iter().find(|p| Path::new(p).exists()) {
                return Err(TlsError::CaExists(existing.clone()));
            }
            write_pair(Path::new(&cert), &ca.cert_pem, Path::new(&key), &ca.key_pem)?;
        }
        TlsCmd::Cert {
            command: CertCmd::Create(a),
        } => {
            let ca_path =
                a.ca.unwrap_or_else(|| format!("{}-agent-ca.pem", a.domain).into());
            let key_path = a
                .key
                .unwrap_or_else(|| format!("{}-agent-ca-key.pem", a.domain).into());
            let read = |p: &Path| std::fs::read_to_string(p).map_err(io(p));
            let role = if a.server { Role::Server } else { Role::Client };
            let req = CertRequest {
                role,
                datacenter: &a.dc,
                domain: &a.domain,
                days: a.days,
                extra_dns: &a.additional_dnsname,
                extra_ips: &a.additional_ipaddress,
            };
            let leaf = pki::create_cert(
                &read(&ca_path)?,
                &read(&key_path)?,
                &req,
                OffsetDateTime::now_utc(),
            )?;
            let stem = format!("{}-{}-{}", a.dc, role.as_str(), a.domain);
            let (cert, key) = (0..MAX_CERT_INDEX)
                .map(|i| {
                    (
                        PathBuf::from(format!("{stem}-{i}.pem")),
                        PathBuf::from(format!("{stem}-{i}-key.pem")),
                    )
                })
                .find(|(c, k)| !c.exists() && !k.exists())
                .ok_or_else(|| TlsError::NoFreeName(stem.clone()))?;
            write_pair(&cert, &leaf.cert_pem, &key, &leaf.key_pem)?;
        }
    }
    Ok(0)
}

/// Writes the certificate (0644) and its key (0600), each created new; says what it saved.
fn write_pair(cert: &Path, cert_pem: &str, key: &Path, key_pem: &str) -> Result<(), TlsError> {
    for (path, body, mode) in [(cert, cert_pem, 0o644), (key, key_pem, 0o600)] {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(io(path))?;
        f.write_all(body.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(path))?;
        println!("==> Saved {}", path.display());
    }
    Ok(())
}
