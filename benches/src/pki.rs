//! Certificates for the harnesses that compare the RPC port with and without TLS: an agent CA,
//! a server certificate and a client certificate made in-process (`mesh_control::tls::pki`,
//! what `meshctl tls` uses) and written to a directory, keys 0600.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use mesh_control::tls::TlsFiles;
use mesh_control::tls::pki::{CertRequest, Role, create_ca, create_cert};

/// The files of one agent CA: what a server and a client agent each present.
pub struct Pki {
    pub server: TlsFiles,
    pub client: TlsFiles,
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

impl Pki {
    /// A CA for datacenter `dc1` and one server and one client certificate, in `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let now = time::OffsetDateTime::now_utc();
        let ca = create_ca("mesh", 30, now)?;
        let ca_file = dir.join("ca.pem");
        write(&ca_file, &ca.cert_pem, 0o644)?;
        let files = |role: Role, name: &str| -> anyhow::Result<TlsFiles> {
            let req = CertRequest::new(role, "dc1");
            let c = create_cert(&ca.cert_pem, &ca.key_pem, &req, now)?;
            let (cert, key) = (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}-key.pem")),
            );
            write(&cert, &c.cert_pem, 0o644)?;
            write(&key, &c.key_pem, 0o600)?;
            Ok(TlsFiles {
                ca_file: ca_file.clone(),
                cert_file: Some(cert),
                key_file: Some(key),
            })
        };
        Ok(Self {
            server: files(Role::Server, "server")?,
            client: files(Role::Client, "client")?,
        })
    }
}
