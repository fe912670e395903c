//! curl, the third-party HTTP client the API tests drive `meshd` with: one request, its
//! status, headers and body, with the caller's token in the header or as a bearer.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;

/// How a request carries its token.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    /// `X-Consul-Token`.
    Header(&'a str),
    /// `Authorization: Bearer`.
    Bearer(&'a str),
}

/// One answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// The response headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the answer is `status` (the body is in the message).
    #[track_caller]
    pub fn assert_status(&self, status: u16) {
        assert_eq!(self.status, status, "{}", self.body);
    }

    /// Asserts the answer is `status` with a body containing `text`.
    #[track_caller]
    pub fn assert_refused(&self, status: u16, text: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(self.body.contains(text), "{text:?} not in {:?}", self.body);
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// `curl -X method` on `http://addr/path`, with `auth` and an optional JSON `body`.
pub fn curl_at(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Auth<'_>,
    body: Option<&str>,
) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-D",
        "-",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ]);
    match auth {
        Auth::None => {}
        Auth::Header(t) => {
            cmd.args(["-H", &format!("X-Consul-Token: {t}")]);
        }
        Auth::Bearer(t) => {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
    }
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    cmd.arg(format!("http://{addr}{path}"));
    let out = cmd.output().expect("run curl");
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // `-D -`: the header block first, up to the blank line.
    let (head, rest) = text.split_once("\r\n\r\n").expect("curl wrote the headers");
    let (body, code) = rest.rsplit_once('\n').expect("curl wrote the status line");
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status: code.trim().parse().expect("status code"),
        body: body.to_string(),
        headers,
    }
}
