//! The main job (`cargo xtask demo`, as root): the whole mesh on one machine, explained as it
//! goes.
//!
//! `meshd dev` (the embedded single-node control plane) starts; two simulated pods (network
//! namespace + cgroup each, joined by a veth pair) get an app each and a `meshproxy run
//! --transparent` sidecar that captures their traffic with eBPF. An unmodified Python client
//! in pod `web` connects to the plain address of the `db` app in the other pod: with an allow
//! intention the bytes go through both proxies over mutual TLS; after the intention flips to
//! deny, the next connection is refused before `db` sees a byte. Each outcome is one line.
//! Then everything is torn down and the demo checks nothing stayed attached.
//!
//! It reuses the transparent-mode test harness ([`mesh_tests::transparent`]), so the demo and
//! the tests exercise exactly the same setup.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, bail};
use mesh_tests::process::{eventually, meshctl};
use mesh_tests::transparent::{
    Capture, Echo, Proxy, client, loaded_mesh_programs, meshd_dev, pods, register, require_root,
    set_intention, wait_ca,
};

const DB_PORT: u16 = 5432;

fn step(what: &str) {
    println!("\n== {what}");
}

fn ctl(http: &str, args: &[&str]) {
    println!("$ meshctl {}", args.join(" "));
    let out = meshctl(http, args);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

fn main() -> anyhow::Result<()> {
    require_root();
    let started = Instant::now();

    step("control plane: meshd dev (one Raft server + agent, built-in CA)");
    let dev = meshd_dev();
    let http = dev.http_addr;
    wait_ca(http);
    println!(
        "meshd dev is ready at http://{http} ({:?})",
        started.elapsed()
    );
    ctl(&http.to_string(), &["operator", "raft", "list-peers"]);
    ctl(&http.to_string(), &["connect", "ca", "roots"]);

    step("two pods (network namespace + cgroup v2 each, joined by a veth pair)");
    let pods = pods();
    println!("pod web: {} (netns {})", pods.a.ip, pods.a.name);
    println!("pod db:  {} (netns {})", pods.b.ip, pods.b.name);
    let app = Echo::start(&pods.b, DB_PORT);
    register(http, "web", &pods.a, 8080);
    register(http, "db", &pods.b, DB_PORT);

    step("sidecars: meshproxy run --transparent (eBPF connect4/getpeername4/sk_lookup)");
    let proxy_web = Proxy::start(http, "web", &pods.a, &[]);
    let proxy_db = Proxy::start(http, "db", &pods.b, &[]);
    println!(
        "both proxies ready; mesh programs loaded: {:?}",
        loaded_mesh_programs()
    );

    let dst = SocketAddr::new(pods.b.ip.into(), DB_PORT);
    let result = (|| -> anyhow::Result<()> {
        step("allowed: intention web -> db allow");
        ctl(
            &http.to_string(),
            &["intention", "create", "--allow", "web", "db"],
        );
        let marker = "SELECT-1-demo-marker";
        let capture = Capture::start(&pods.a, marker);
        let out = client(&pods.a, dst, marker);
        let wire = capture.finish();
        let echoed = out["echo"].as_str() == Some(marker);
        let peer = app
            .seen()
            .last()
            .map_or("none".to_string(), |s| s.peer.to_string());
        println!(
            "ALLOWED  web -> db {dst}: echo {} | db's app saw peer {peer} (its own proxy) | client sees \
             peer {} | on the veth: {} TLS records, {} plaintext markers",
            if echoed { "ok" } else { "MISSING" },
            out["peername"],
            wire["tls_records"],
            wire["marker"],
        );
        if !echoed || wire["marker"].as_u64() != Some(0) {
            bail!("the allowed connection did not go through the mesh as expected: {out}");
        }

        step("denied: intention web -> db flipped to deny");
        set_intention(http, "web", "db", "deny");
        // The source proxy's view of the new intention arrives by a blocking query; wait for
        // it by retrying the client a bounded number of times until it is refused.
        let mut refused = None;
        for _ in 0..50 {
            let out = client(&pods.a, dst, "should-not-arrive");
            if out["echo"].as_str() != Some("should-not-arrive") {
                refused = Some(out);
                break;
            }
        }
        let out = refused.context("the deny intention never took effect")?;
        let reason = proxy_db
            .log()
            .lines()
            .rev()
            .find(|l| l.contains("denied"))
            .map(str::to_owned)
            .unwrap_or_default();
        let reached = app
            .seen()
            .iter()
            .any(|s| s.bytes.windows(17).any(|w| w == b"should-not-arrive"));
        println!(
            "DENIED   web -> db {dst}: client got {} | db's app saw {} new bytes | db proxy: {}",
            out.get("error")
                .or(out.get("echo"))
                .map(ToString::to_string)
                .unwrap_or_default(),
            if reached { "SOME" } else { "no" },
            reason.trim()
        );
        if reached {
            bail!("a denied connection reached the app");
        }
        Ok(())
    })();

    step("teardown");
    drop(proxy_web);
    drop(proxy_db);
    drop(app);
    drop(pods);
    drop(dev);
    // Programs are freed by the kernel shortly after their last link's owner exits.
    let left = eventually(
        "no mesh_* program loaded",
        std::time::Duration::from_secs(10),
        || {
            loaded_mesh_programs()
                .is_empty()
                .then_some(Vec::<String>::new())
        },
    )
    .unwrap_or_else(|_| loaded_mesh_programs());
    println!(
        "proxies, pods, cgroups and meshd are gone; mesh programs still loaded: {left:?} ({:?} \
         in all)",
        started.elapsed()
    );
    result?;
    if !left.is_empty() {
        bail!("eBPF programs stayed loaded after the proxies exited: {left:?}");
    }
    Ok(())
}
