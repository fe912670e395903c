//! Configuration files (issue 13 point 5): a `meshd server` started from a config file alone
//! takes its datacenter, node name, data directory and ports from it; a flag overrides the
//! file; a file with an unknown key stops meshd before it binds or creates anything, naming
//! the file and the line.

use std::path::Path;
use std::time::Duration;

use mesh_tests::process::{Meshd, eventually, free_port, http, meshd_refused};

/// `/v1/agent/self`'s `Config` once the server answers it.
fn agent_self(s: &Meshd) -> serde_json::Value {
    eventually(
        "the server's /v1/agent/self",
        Duration::from_secs(30),
        || {
            let r = http("GET", s.http_addr, "/v1/agent/self", None).ok()?;
            (r.status == 200).then(|| r.json().ok()).flatten()
        },
    )
    .unwrap()["Config"]
        .clone()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn a_server_runs_from_a_config_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (rpc, web) = (free_port(), free_port());
    let file = dir.path().join("server.hcl");
    std::fs::write(
        &file,
        format!(
            "datacenter = \"east\"\nnode_name = \"cf1\"\ndata_dir = \"{}\"\nserver = true\n\
             bind_addr = \"127.0.0.1\"\nports {{\n  server = {rpc}\n  http = {web}\n}}\n\
             acl {{\n  enabled = false\n}}\n",
            path(&data)
        ),
    )
    .unwrap();
    let s = Meshd::spawn("cf1", &args(&["server", "--config-file", &path(&file)])).unwrap();
    assert_eq!(s.rpc_addr.to_string(), format!("127.0.0.1:{rpc}"));
    assert_eq!(s.http_addr.to_string(), format!("127.0.0.1:{web}"));
    let config = agent_self(&s);
    assert_eq!(config["Datacenter"], "east", "{config}");
    assert_eq!(config["NodeName"], "cf1", "{config}");
    assert!(
        data.join("raft.redb").exists(),
        "the data directory is the file's"
    );
}

#[test]
fn flags_override_a_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    let web = free_port();
    // Read in lexical order: the second file's datacenter wins over the first's.
    std::fs::write(
        conf.join("10-base.json"),
        format!(
            "{{\"datacenter\": \"west\", \"node_name\": \"from-file\", \"data_dir\": \"{}\",\n \
             \"ports\": {{\"server\": 0, \"http\": {web}}}, \"acl\": {{\"enabled\": false}}}}",
            path(&dir.path().join("data"))
        ),
    )
    .unwrap();
    std::fs::write(conf.join("20-dc.hcl"), "datacenter = \"north\"\n").unwrap();
    let s = Meshd::spawn(
        "flagged",
        &args(&["server", "--config-dir", &path(&conf), "--node", "flagged"]),
    )
    .unwrap();
    assert_eq!(s.http_addr.port(), web);
    let config = agent_self(&s);
    assert_eq!(config["NodeName"], "flagged", "the flag wins: {config}");
    assert_eq!(
        config["Datacenter"], "north",
        "the later file wins: {config}"
    );
}

#[test]
fn an_unknown_key_stops_meshd_with_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("bad.hcl");
    std::fs::write(
        &file,
        format!(
            "node_name = \"bad\"\ndata_dir = \"{}\"\nports {{\n  htp = 8500\n}}\n",
            path(&data)
        ),
    )
    .unwrap();
    let stderr = meshd_refused(&args(&["server", "--config-file", &path(&file)]));
    assert!(
        stderr.contains(&format!("{}:4: ports.htp", path(&file))),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A client agent's file (`server = false`) under
    // `meshd server` is refused at its line.
    let client = dir.path().join("client.json");
    std::fs::write(
        &client,
        "{\n  \"node_name\": \"c\",\n  \"server\": false\n}",
    )
    .unwrap();
    let stderr = meshd_refused(&args(&["server", "--config-file", &path(&client)]));
    assert!(
        stderr.contains(&format!("{}:3: server is false", path(&client))),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing was created");
}
