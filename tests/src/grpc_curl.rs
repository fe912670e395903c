//! gRPC calls made with curl, a client independent of ours, to test what the servers' RPC port
//! admits: curl speaks HTTP/2 over TLS, sends one gRPC message (uncompressed, framed with its
//! length) and its verbose output shows the handshake and the `grpc-status` trailer.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

/// One call: the server at `server` is verified as `server.dc1.mesh` against `ca`; `client` is
/// the certificate and key to present, if any; `token` goes in `x-consul-token`; `message` is
/// the encoded protobuf request (empty: every field at its default).
pub struct GrpcCall<'a> {
    pub ca: &'a Path,
    pub server: SocketAddr,
    pub client: Option<(&'a Path, &'a Path)>,
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub message: &'a [u8],
}

impl GrpcCall<'_> {
    /// Runs the call with `curl()` (a fresh `curl` command each time, e.g. one made to run in
    /// a network namespace); curl's verbose output.
    ///
    /// curl 7.88 sometimes reports a refusal that arrives before it has sent the request body
    /// (the server answers at once and resets the stream) as error 92 instead of showing the
    /// answer (more often between network namespaces, where the answer comes sooner); such a
    /// call is repeated, at most twenty times.
    pub fn run(&self, curl: impl Fn() -> Command) -> String {
        let mut out = String::new();
        for _ in 0..20 {
            out = self.once(curl());
            if !out.contains("curl: (92)") {
                break;
            }
        }
        out
    }

    fn once(&self, mut c: Command) -> String {
        let port = self.server.port();
        c.args([
            "-sS",
            "-v",
            "--http2",
            "--max-time",
            "10",
            "--cacert",
            &self.ca.display().to_string(),
            "--resolve",
            &format!("server.dc1.mesh:{port}:{}", self.server.ip()),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--data-binary",
            "@-",
            "-o",
            "/dev/null",
            &format!("https://server.dc1.mesh:{port}{}", self.path),
        ]);
        if let Some((cert, key)) = self.client {
            c.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(t) = self.token {
            c.args(["-H", &format!("x-consul-token: {t}")]);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl runs");
        if let Some(mut stdin) = child.stdin.take() {
            let len = u32::try_from(self.message.len()).expect("a small message");
            let mut framed = vec![0u8];
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(self.message);
            let _ = stdin.write_all(&framed);
        }
        let out = child.wait_with_output().expect("curl finishes");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// The `grpc-status` trailer curl saw, if the call got that far (`None`: refused before any
/// gRPC answer, e.g. in the TLS handshake).
pub fn grpc_status(curl: &str) -> Option<u32> {
    curl.lines()
        .find_map(|l| l.strip_prefix("< grpc-status: "))
        .and_then(|v| v.trim().parse().ok())
}
