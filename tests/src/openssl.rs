//! `openssl verify` as an X.509 verifier independent of ours, for the CA, agent and proxy tests.

/// The PEM bundle (`-CAfile`) of every root in a `/v1/connect/ca/roots` answer: each
/// `RootCert`, newline-terminated.
pub fn root_bundle(list: &serde_json::Value) -> String {
    list["Roots"]
        .as_array()
        .expect("Roots array")
        .iter()
        .map(|r| {
            r["RootCert"]
                .as_str()
                .expect("RootCert")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect()
}

/// Runs `openssl verify <args>`; `Ok(stdout)` when it exits 0, `Err(stdout+stderr)` otherwise.
pub async fn openssl_verify(args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("openssl")
        .arg("verify")
        .args(args)
        .output()
        .await
        .expect("the openssl binary must be installed for these tests");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}
