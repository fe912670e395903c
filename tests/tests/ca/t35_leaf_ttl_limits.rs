//! `LeafCertTTL` within Consul's bounds and the root's life, checked with curl against
//! `meshd dev`: a leaf lifetime above Consul's maximum (8760h) or longer than the root that
//! signs it is refused with 400 naming the limit, and nothing changes.

use mesh_tests::dev::dev_args;
use mesh_tests::process::Meshd;

/// `curl -X PUT` of a CA configuration with `config` (JSON object text): status and body.
fn put_config(addr: std::net::SocketAddr, config: &str) -> (String, String) {
    let body = format!(r#"{{"Provider":"consul","Config":{config}}}"#);
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "-X",
            "PUT",
            "-d",
        ])
        .arg(&body)
        .arg(format!("http://{addr}/v1/connect/ca/configuration"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (code.to_string(), body.to_string())
}

#[test]
fn leaf_ttl_is_capped_and_cannot_outlive_its_root() {
    let dev = Meshd::spawn("dev", &dev_args()).expect("meshd dev");
    let addr = dev.http_addr;
    let (code, body) = put_config(addr, r#"{"LeafCertTTL":"80000h"}"#);
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("at most 8760h0m0s"), "{body}");

    let (code, body) = put_config(addr, r#"{"LeafCertTTL":"24h","RootCertTTL":"20h"}"#);
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("would outlive the root"), "{body}");
    assert!(body.contains("20h0m0s left"), "{body}");

    // Neither refusal changed anything; Consul's maximum itself is accepted.
    let config = mesh_tests::process::http("GET", addr, "/v1/connect/ca/configuration", None)
        .and_then(|r| r.json())
        .expect("config");
    assert_eq!(config["Config"]["LeafCertTTL"], "72h", "{config}");
    let (code, body) = put_config(addr, r#"{"LeafCertTTL":"8760h"}"#);
    assert_eq!(code, "200", "{body}");
}
