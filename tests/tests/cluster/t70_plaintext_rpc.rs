//! A plaintext RPC port on a non-loopback address is refused at start (issue 13 point 2,
//! "secure by default", while the port has no TLS yet): `meshd server` and `meshd dev` exit
//! non-zero before binding anything or creating the data directory, naming the flag that
//! accepts the risk. The check runs before any socket exists, so nothing leaves loopback.

use mesh_tests::process::{free_port, meshd_refused};

#[test]
fn a_non_loopback_plaintext_bind_is_refused() {
    let dir = mesh_tests::data_dir();
    let data = dir.path().join("s1");
    let http = format!("127.0.0.1:{}", free_port());
    let server: Vec<String> = [
        "server",
        "--node",
        "s1",
        "--data-dir",
        &data.display().to_string(),
        "--bind",
        "10.255.255.1:8300",
        "--http-addr",
        &http,
    ]
    .map(String::from)
    .to_vec();
    let dev: Vec<String> = ["dev", "--bind", "0.0.0.0:0", "--http-addr", &http]
        .map(String::from)
        .to_vec();
    for args in [server, dev] {
        let stderr = meshd_refused(&args);
        assert!(
            stderr.contains("refusing to serve Raft and the agent API in plaintext")
                && stderr.contains("--insecure-plaintext-rpc"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(!data.exists(), "nothing was created");
}
