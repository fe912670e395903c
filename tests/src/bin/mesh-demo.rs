//! The main job (`cargo xtask demo`, as root): the whole mesh on one machine, explained as it
//! goes.
//!
//! `meshd dev` (the embedded single-node control plane) starts; two simulated pods (network
//! namespace + cgroup each, joined by a veth pair) get an app each and a `meshproxy run
//! --transparent` sidecar that captures their traffic with eBPF. An unmodified Python client
//! in pod `web` connects to the plain address of the `db` app in the other pod: with an allow
//! intention the bytes go through both proxies over mutual TLS; after the intention flips to
//! deny, the next connection is refused before `db` sees a byte. Then `db`'s proxy is
//! SIGKILLed: the capture is pinned and fails closed, so the next connection is refused and no
//! plaintext crosses the veth; started again it serves at once, and a second proxy started
//! under load takes the listeners over from it with no connection lost. Each outcome is one
//! line. Then everything is torn down and the
//! demo checks nothing stayed pinned or loaded.
//!
//! It reuses the transparent-mode test harness ([`mesh_tests::transparent`]), so the demo and
//! the tests exercise exactly the same setup.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, bail};
use mesh_tests::load::Load;
use mesh_tests::process::{eventually, meshctl};
use mesh_tests::transparent::{
    Capture, Echo, Proxy, client, loaded_mesh_programs, meshd_dev, pinned, pods, register,
    require_root, set_intention, transparent_status, wait_ca,
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
    let mut proxy_db = Proxy::start(http, "db", &pods.b, &[]);
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
        let peer = app.seen().last().map(|s| s.peer);
        let caller_kept = peer.is_some_and(|p| p.ip() == std::net::IpAddr::from(pods.a.ip));
        let peer = format!(
            "{} ({})",
            peer.map_or("none".to_string(), |p| p.to_string()),
            if caller_kept {
                "web's own address: db's proxy kept the caller's address"
            } else {
                "NOT web's address"
            }
        );
        println!(
            "ALLOWED  web -> db {dst}: echo {} | db's app saw peer {peer} | client sees \
             peer {} | on the veth: {} TLS records, {} plaintext markers",
            if echoed { "ok" } else { "MISSING" },
            out["peername"],
            wire["tls_records"],
            wire["marker"],
        );
        if !echoed || wire["marker"].as_u64() != Some(0) || !caller_kept {
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

        step("killed: intention back to allow, then db's proxy is SIGKILLed");
        set_intention(http, "web", "db", "allow");
        let mut allowed = false;
        for _ in 0..50 {
            if client(&pods.a, dst, "again")
                .get("echo")
                .and_then(|e| e.as_str())
                == Some("again")
            {
                allowed = true;
                break;
            }
        }
        if !allowed {
            bail!("the allow intention never took effect again");
        }
        proxy_db.stop("KILL");
        let marker = "KILLED-demo-marker";
        let seen = app.seen().len();
        let capture = Capture::start(&pods.a, marker);
        let out = client(&pods.a, dst, marker);
        let wire = capture.finish();
        let status = pinned(&pods.b);
        let held = status.as_ref().map(|s| {
            s["proxy_pid"]
                .as_u64()
                .map_or("no proxy".into(), |p| format!("pid {p}"))
        });
        println!(
            "KILLED   web -> db {dst}: client got {} | db's app saw {} new connections | on the \
             veth: {} plaintext markers | transparent status: db pinned, {}",
            out.get("error")
                .or(out.get("echo"))
                .map(ToString::to_string)
                .unwrap_or_default(),
            app.seen().len() - seen,
            wire["marker"],
            held.unwrap_or_else(|| "NOT PINNED".into()),
        );
        if out["echo"].as_str() == Some(marker)
            || app.seen().len() != seen
            || wire["marker"].as_u64() != Some(0)
            || status.is_none()
        {
            bail!("with db's proxy killed, a connection was not refused: {out} {wire}");
        }

        step("restarted: db's proxy started again, then replaced under load");
        let begun = Instant::now();
        let first = Proxy::start(http, "db", &pods.b, &["--drain-timeout", "30s"]);
        let back = begun.elapsed();
        let mut load = Load::start(pods.a.command("python3")?, dst, 3.0, 4);
        // A second of load, then the replacement takes the listeners over.
        load.alone_for(std::time::Duration::from_secs(1));
        let begun = Instant::now();
        let second = Proxy::start(http, "db", &pods.b, &["--drain-timeout", "30s"]);
        let handed = begun.elapsed();
        let r = load.finish();
        println!(
            "RESTARTED web -> db {dst}: killed proxy restarted, serving after {back:?} | then \
             replaced under load (new one ready in {handed:?}, listeners handed over): {} \
             connections during the restart, {} failed, {}/4 streams intact",
            r["new_ok"], r["new_failed"], r["streams_ok"]
        );
        drop(first);
        proxy_db = second;
        if r["new_failed"] != 0 || r["streams_ok"] != 4 {
            bail!("connections failed during the restart: {r}");
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
    let still_pinned = transparent_status();
    println!(
        "proxies, pods (with their pinned captures), cgroups and meshd are gone; pinned pods: \
         {}, mesh programs still loaded: {left:?} ({:?} in all)",
        still_pinned.len(),
        started.elapsed()
    );
    result?;
    if !left.is_empty() || !still_pinned.is_empty() {
        bail!("eBPF programs stayed pinned or loaded after teardown: {left:?} {still_pinned:?}");
    }
    Ok(())
}
