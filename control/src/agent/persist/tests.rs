//! Persistence tests: the pure format (round trip, versions, file names) and the store against
//! real files in a temporary directory (modes, atomic replacement, bad files), plus the local
//! state's record/restore round trip with real check runners.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::agent::checks::{CheckUpdate, RunnerConfig};
use crate::agent::local::LocalState;
use crate::agent::registration;
use crate::data_dir::scratch;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `web` with a sidecar (Consul's default sidecar checks) and a TTL check on `web`.
fn registered(state: &mut LocalState, updates: &mpsc::Sender<CheckUpdate>) {
    let body = json!({
        "Name": "web", "Port": 8080,
        "Check": {"TTL": "30s", "Status": "passing", "CheckID": "web-ttl"},
        "Connect": {"SidecarService": {"Proxy": {"Upstreams": [
            {"DestinationName": "db", "LocalBindPort": 9191}]}}}
    });
    let specs = registration::parse(body.to_string().as_bytes(), "n1", &[]).unwrap();
    state
        .register("n1", specs, false, updates, &RunnerConfig::default())
        .unwrap();
}

fn sample() -> PersistedService {
    PersistedService {
        version: FORMAT_VERSION,
        service: serde_json::from_value(json!({
            "ID": "web/1", "Service": "web", "Node": "n1", "Port": 8080,
            "Meta": {"team_name": "a"}, "Tags": ["v1"]
        }))
        .unwrap(),
        checks: vec![
            PersistedCheck {
                check_id: "service:web/1".into(),
                name: "ttl".into(),
                notes: String::new(),
                definition: Some(json!({"TTL": "30s", "Header": {"x_y": ["1"]}})),
                alias_of: None,
                status: HealthStatus::Warning,
                output: "slow".into(),
                ttl_deadline_unix_ms: Some(1_700_000_000_123),
            },
            PersistedCheck {
                check_id: "alias".into(),
                name: "alias".into(),
                notes: String::new(),
                definition: None,
                alias_of: Some("db".into()),
                status: HealthStatus::Passing,
                output: String::new(),
                ttl_deadline_unix_ms: None,
            },
        ],
    }
}

#[test]
fn format_round_trips() {
    let s = sample();
    let bytes = encode(&s).unwrap();
    assert_eq!(decode(&bytes).unwrap(), s);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["Version"], 1);
    assert_eq!(v["Checks"][0]["TTLDeadlineUnixMs"], 1_700_000_000_123u64);
    assert_eq!(v["Checks"][0]["Status"], "warning");
}

#[test]
fn decode_tells_corrupt_from_newer() {
    assert!(matches!(
        decode(b"{\"Version\":1,"),
        Err(FormatError::Json(_))
    ));
    assert!(matches!(decode(b"{}"), Err(FormatError::MissingVersion)));
    assert!(matches!(decode(b"[1]"), Err(FormatError::MissingVersion)));
    assert!(matches!(
        decode(br#"{"Version":1,"Service":7}"#),
        Err(FormatError::Shape(_))
    ));
    let mut v = serde_json::to_value(sample()).unwrap();
    v["Version"] = json!(2);
    // A newer writer may add fields; the version alone decides.
    v["Token"] = json!("t");
    assert!(matches!(
        decode(&serde_json::to_vec(&v).unwrap()),
        Err(FormatError::UnsupportedVersion { found: 2 })
    ));
}

#[test]
fn file_names_stay_inside_the_directory_and_apart() {
    assert_eq!(file_name("web-sidecar-proxy"), "web-sidecar-proxy.json");
    assert_eq!(file_name("a/b"), "a%2Fb.json");
    assert_eq!(file_name(".."), "%2E%2E.json");
    assert_eq!(file_name("a%2Fb"), "a%252Fb.json");
    assert_ne!(file_name("a b"), file_name("a_b"));
    let long_a = "x".repeat(500);
    let long_b = format!("{}y", "x".repeat(499));
    for n in [file_name(&long_a), file_name(&long_b)] {
        assert!(n.len() <= 205, "{} bytes", n.len());
        assert!(!n.contains('/'));
    }
    assert_ne!(file_name(&long_a), file_name(&long_b));
}

#[test]
fn open_creates_private_dirs_and_refuses_open_ones() {
    let tmp = scratch();
    let fresh = tmp.path().join("a/b/c");
    let store = Store::open(&fresh).unwrap();
    assert_eq!(mode(&fresh), DIR_MODE);
    assert_eq!(mode(&store.services_dir()), DIR_MODE);
    store.save(&sample()).unwrap();

    // Group- or world-readable: refused with the fix, and left as it was.
    let file = store.path_of("web/1");
    for (path, wide, private, fix) in [
        (&fresh, 0o755, DIR_MODE, "chmod 700"),
        (&file, 0o644, FILE_MODE, "chmod 600"),
    ] {
        fs::set_permissions(path, fs::Permissions::from_mode(wide)).unwrap();
        let err = Store::open(&fresh).unwrap_err();
        assert!(matches!(err, PersistError::DataDir(_)), "{err}");
        let fix = format!("{fix} {}", path.display());
        assert!(err.to_string().ends_with(&fix), "{err}");
        assert_eq!(mode(path), wide);
        fs::set_permissions(path, fs::Permissions::from_mode(private)).unwrap();
    }
    assert_eq!(
        Store::open(&fresh).unwrap().load().unwrap().services.len(),
        1
    );
}

#[test]
fn save_is_atomic_private_and_replaces() {
    let tmp = scratch();
    let store = Store::open(tmp.path()).unwrap();
    let mut s = sample();
    store.save(&s).unwrap();
    let path = store.path_of("web/1");
    assert_eq!(path.file_name().unwrap(), "web%2F1.json");
    assert_eq!(mode(&path), FILE_MODE);

    // A leftover temporary file with wide permissions (a crash mid-write) does not widen the
    // next write, and the target is replaced whole.
    let tmp_file = store
        .services_dir()
        .join(format!("{TMP_PREFIX}{}", file_name("web/1")));
    fs::write(&tmp_file, b"partial").unwrap();
    fs::set_permissions(&tmp_file, fs::Permissions::from_mode(0o666)).unwrap();
    s.checks[0].status = HealthStatus::Critical;
    store.save(&s).unwrap();
    assert_eq!(mode(&path), FILE_MODE);
    assert!(
        !tmp_file.exists(),
        "the temporary file was renamed over the target"
    );
    assert_eq!(decode(&fs::read(&path).unwrap()).unwrap(), s);
    let names: Vec<_> = fs::read_dir(store.services_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["web%2F1.json"]);
}

#[test]
fn load_removes_interrupted_writes() {
    let tmp = scratch();
    let store = Store::open(tmp.path()).unwrap();
    store.save(&sample()).unwrap();
    let leftover = store.services_dir().join(format!("{TMP_PREFIX}x.json"));
    fs::write(&leftover, b"{").unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.services.len(), 1);
    assert!(loaded.set_aside.is_empty());
    assert!(!leftover.exists());
}

#[test]
fn remove_deletes_the_file() {
    let tmp = scratch();
    let store = Store::open(tmp.path()).unwrap();
    store.save(&sample()).unwrap();
    assert!(store.remove("web/1").unwrap());
    assert!(!store.path_of("web/1").exists());
    assert!(
        !store.remove("web/1").unwrap(),
        "removing twice is not an error"
    );
    assert!(store.load().unwrap().services.is_empty());
}

#[test]
fn corrupt_files_are_set_aside_and_the_rest_loads() {
    let tmp = scratch();
    let store = Store::open(tmp.path()).unwrap();
    store.save(&sample()).unwrap();
    let bad = store.services_dir().join("broken.json");
    fs::write(&bad, b"{\"Version\": 1, \"Service\": ").unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.services.len(), 1);
    assert_eq!(loaded.services[0].1, sample());
    assert_eq!(loaded.set_aside.len(), 1);
    let aside = &loaded.set_aside[0];
    assert_eq!(aside.path, bad);
    assert_eq!(
        aside.moved_to,
        store.services_dir().join("broken.json.corrupt")
    );
    assert!(aside.reason.contains("not valid JSON"), "{}", aside.reason);
    assert!(!bad.exists());
    assert_eq!(
        fs::read(&aside.moved_to).unwrap(),
        b"{\"Version\": 1, \"Service\": ",
        "the content is kept as it was"
    );
    // Loading again neither reads nor moves the set-aside file; a second corrupt file of the
    // same name does not overwrite the first.
    fs::write(&bad, b"nope").unwrap();
    let again = store.load().unwrap();
    assert_eq!(again.services.len(), 1);
    assert_eq!(again.set_aside.len(), 1);
    assert_ne!(again.set_aside[0].moved_to, aside.moved_to);
    assert!(aside.moved_to.exists() && again.set_aside[0].moved_to.exists());
}

#[test]
fn unreadable_and_newer_files_stop_the_load_naming_the_file() {
    let tmp = scratch();
    let store = Store::open(tmp.path()).unwrap();
    // A directory where a file should be cannot be read (root included).
    let odd = store.services_dir().join("odd.json");
    fs::create_dir(&odd).unwrap();
    let err = store.load().unwrap_err();
    assert!(
        matches!(err, PersistError::Read { ref path, .. } if *path == odd),
        "{err}"
    );
    assert!(err.to_string().contains("odd.json"), "{err}");
    fs::remove_dir(&odd).unwrap();

    let mut v = serde_json::to_value(sample()).unwrap();
    v["Version"] = json!(9);
    let newer = store.services_dir().join("newer.json");
    fs::write(&newer, serde_json::to_vec(&v).unwrap()).unwrap();
    // A corrupt file sorted before it is not moved either: an error leaves everything as is.
    let bad = store.services_dir().join("aaa.json");
    fs::write(&bad, b"garbage").unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, PersistError::NewerVersion { .. }), "{err}");
    assert!(err.to_string().contains("newer.json"), "{err}");
    assert!(newer.exists(), "a newer file is left in place");
    assert!(bad.exists(), "nothing was set aside by a load that failed");
}

/// Register, record, restore into a fresh state: the same services and checks with the same
/// statuses, outputs and TTL deadline; the restored TTL check runs.
#[tokio::test]
async fn local_state_record_and_restore_round_trip() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut before = LocalState::default();
    registered(&mut before, &tx);
    // What the runners report (every check shares the channel), applied as the agent does,
    // until the TTL check shows the update.
    let deadline = Instant::now() + Duration::from_secs(10);
    before
        .ttl_update("web-ttl", HealthStatus::Warning, "busy")
        .unwrap();
    while before.checks["web-ttl"].check.output != "busy" {
        let u = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the TTL check reports its update")
            .unwrap();
        before.apply_update(u);
    }

    let ids: Vec<String> = before.services.keys().cloned().collect();
    assert_eq!(ids, ["web", "web-sidecar-proxy"]);
    let records: Vec<PersistedService> = ids.iter().map(|id| before.record(id).unwrap()).collect();
    let ttl = &records[0].checks[0];
    assert_eq!(ttl.status, HealthStatus::Warning);
    let left = from_unix_ms(ttl.ttl_deadline_unix_ms.unwrap())
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(25) && left <= Duration::from_secs(30),
        "{left:?}"
    );
    assert_eq!(
        records[1].checks.len(),
        2,
        "the sidecar's listening and alias checks"
    );

    // Through the file format, as on a restart.
    let tmp = scratch();
    let store = Store::open(tmp.path()).unwrap();
    for r in &records {
        store.save(r).unwrap();
    }
    let (tx2, mut rx2) = mpsc::channel(64);
    let mut after = LocalState::default();
    for (_, r) in store.load().unwrap().services {
        after
            .restore("n1", r, &tx2, &RunnerConfig::default(), SystemTime::now())
            .unwrap();
    }
    assert_eq!(after.services, before.services);
    let key = |s: &LocalState| {
        s.effective_checks()
            .into_iter()
            .map(|c| (c.check_id, c.status, c.output, c.name, c.service_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&after), key(&before));
    assert_eq!(after.record("web"), before.record("web"));
    // The TTL runner resumed from the persisted state (its first report changes nothing).
    let u = loop {
        let u = tokio::time::timeout_at(deadline, rx2.recv())
            .await
            .unwrap()
            .unwrap();
        if u.check_id == "web-ttl" {
            break u;
        }
    };
    assert_eq!(
        (u.status, u.output.as_str()),
        (HealthStatus::Warning, "busy")
    );
    assert!(!after.apply_update(u));

    // Deregistering the parent removes both services; their files go with them.
    let removed = after.deregister("web").unwrap();
    assert_eq!(removed, ["web", "web-sidecar-proxy"]);
    for id in &removed {
        assert!(after.record(id).is_none());
        assert!(store.remove(id).unwrap());
    }
    assert!(store.load().unwrap().services.is_empty());
}

/// A record whose check no longer validates is refused whole.
#[tokio::test]
async fn restore_refuses_an_invalid_check_and_changes_nothing() {
    let (tx, _rx) = mpsc::channel(8);
    let mut rec = sample();
    rec.checks[0].definition = Some(json!({"Script": "/bin/true", "Interval": "1s"}));
    let mut state = LocalState::default();
    let err = state
        .restore("n1", rec, &tx, &RunnerConfig::default(), SystemTime::now())
        .unwrap_err();
    assert!(err.to_string().contains("service:web/1"), "{err}");
    assert!(state.services.is_empty() && state.checks.is_empty());
}
