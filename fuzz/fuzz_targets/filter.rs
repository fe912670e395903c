//! Fuzzes Consul's filter language (`mesh_policy::filter`, what every `?filter=` goes
//! through): arbitrary text. Any panic is a bug; so is a parsed expression that evaluates with
//! a panic against a fixed row, whose printed form does not parse back to the same tree, or
//! whose reparsed form answers differently.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mesh_policy::filter::Filter;
use serde_json::{Value, json};

/// A `/v1/health/service` row with every JSON type, a list of objects, maps and nulls.
static ROW: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "Node": {"Node": "n1", "Address": "10.0.0.1", "Meta": {"rack": "r1", "k v": "x"}},
        "Service": {
            "ID": "web-1", "Service": "web", "Tags": ["v2", "primary", 3, true],
            "Port": 8080, "Meta": {"env": "prod", "": ""}, "EnableTagOverride": false,
            "Weights": {"Passing": 1.5, "Warning": -1}, "Proxy": null, "Big": 18446744073709551615u64
        },
        "Checks": [
            {"CheckID": "serfHealth", "Status": "passing", "ServiceTags": []},
            {"CheckID": "service:web-1", "Status": "critical", "ServiceTags": ["v2"]}
        ],
        "Nested": [[{"a": [1, 2, {"b": null}]}]]
    })
});

const FIELDS: &[&str] = &["Node", "Service", "Checks", "Nested"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(filter) = Filter::parse(text) else {
        return;
    };
    let _ = filter.check_fields(FIELDS);
    let answer = filter.matches(&ROW);
    let printed = filter.to_string();
    let again = match Filter::parse(&printed) {
        Ok(f) => f,
        // Escapes can make the printed form longer than the input limit; nothing else may fail.
        Err(_) if printed.len() > mesh_policy::filter::MAX_LEN => return,
        Err(e) => panic!("{text:?} printed as {printed:?} does not parse: {e}"),
    };
    assert_eq!(filter, again, "{text:?} printed as {printed:?}");
    assert_eq!(answer, again.matches(&ROW), "{text:?} printed as {printed:?}");
});
