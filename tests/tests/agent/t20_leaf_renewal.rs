//! Leaf renewal: with a short `LeafCertTTL`, a blocking query on the agent's leaf returns a new
//! leaf (another serial) before the old one expires, renewed between 60% and 90% of its
//! lifetime (`control/src/agent/leaf.rs`), and not again right away.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{InprocEnv, ok};

const LEAF_TTL_SECS: f64 = 6.0;

fn rfc3339(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().expect("RFC 3339 string"), &Rfc3339)
        .unwrap_or_else(|e| panic!("{v} is not RFC 3339: {e}"))
}

/// The leaf without its key and PEM, for failure messages.
fn brief(l: &Value) -> String {
    format!(
        "serial {} valid {}..{} index {}",
        l["SerialNumber"], l["ValidAfter"], l["ValidBefore"], l["ModifyIndex"]
    )
}

fn secs(d: time::Duration) -> f64 {
    d.as_seconds_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_is_renewed_before_it_expires() {
    let env = InprocEnv::start("client-renew", |_| {}).await;
    let a = env.http;

    // Shorten the leaf TTL, keeping the other keys as they are (through the agent).
    let mut conf = ok(a, "GET", "/v1/connect/ca/configuration", None)
        .await
        .json();
    conf["Config"]["LeafCertTTL"] = Value::from("6s");
    let body = serde_json::json!({"Provider": conf["Provider"], "Config": conf["Config"]});
    ok(
        a,
        "PUT",
        "/v1/connect/ca/configuration",
        Some(&body.to_string()),
    )
    .await;

    let asked = OffsetDateTime::now_utc();
    let first = ok(a, "GET", "/v1/agent/connect/ca/leaf/web", None).await;
    let answered = OffsetDateTime::now_utc();
    let index = first.index();
    let old = first.json();
    let valid_before = rfc3339(&old["ValidBefore"]);
    // Issued for this request, so its lifetime from issue is at most the TTL.
    let life_left = secs(valid_before - answered);
    assert!(
        life_left > 0.0 && life_left <= LEAF_TTL_SECS + 0.5,
        "leaf issued with the 6s TTL: {}",
        brief(&old)
    );

    let r = ok(
        a,
        "GET",
        &format!("/v1/agent/connect/ca/leaf/web?index={index}&wait=30s"),
        None,
    )
    .await;
    let renewed_at = OffsetDateTime::now_utc();
    let new = r.json();
    assert_ne!(new["SerialNumber"], old["SerialNumber"], "{}", brief(&new));
    assert!(r.index() > index, "a new leaf has a new index");
    assert!(
        renewed_at < valid_before,
        "renewed at {renewed_at}, after the old leaf expired at {valid_before}"
    );
    // Renewal happens at 60-90% of the lifetime: the old leaf was issued between `asked` and
    // `answered`, so its lifetime from issue is at least `valid_before - answered`, and the
    // renewal cannot have come before 60% of that.
    let waited = secs(renewed_at - asked);
    eprintln!(
        "t20: renewed {waited:.2}s after the first fetch; lifetime from issue {life_left:.2}s"
    );
    let earliest = 0.6 * life_left;
    assert!(
        waited >= earliest,
        "renewed after {waited:.2}s, before 60% of the leaf's {life_left:.2}s lifetime \
         ({earliest:.2}s): old {}, new {}",
        brief(&old),
        brief(&new)
    );
    // And not again right away: the new leaf also lives ~6s, so its renewal is >= 3.6s away.
    let again = ok(
        a,
        "GET",
        &format!("/v1/agent/connect/ca/leaf/web?index={}&wait=1s", r.index()),
        None,
    )
    .await;
    assert_eq!(
        again.json()["SerialNumber"],
        new["SerialNumber"],
        "the leaf was renewed again within 1s of a renewal"
    );
    assert_eq!(again.index(), r.index());

    env.shutdown().await;
}
