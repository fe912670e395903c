use super::*;

fn key_lines(v: &Value) -> Vec<(String, Option<usize>)> {
    let mut out = Vec::new();
    if let Value::Object(entries) = v {
        for e in entries {
            out.push((e.key.clone(), e.line.0));
            out.extend(key_lines(&e.value));
        }
    }
    out
}

const HCL: &str = r#"datacenter = "dc1"
ports {
  http = 8500
}
retry_join = ["a", "b"]
server = true
n = null
"#;

const JSON: &str = r#"{
  "datacenter": "dc1",
  "ports": {
    "http": 8500
  },
  "retry_join": ["a", "b"], "server": true,
  "n": null
}"#;

#[test]
fn both_syntaxes_give_the_same_tree_with_key_lines() {
    let hcl = parse_hcl(HCL).unwrap();
    let json = parse_json(JSON).unwrap();
    let strip = |v: &Value| key_lines(v).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(strip(&hcl), strip(&json));
    assert_eq!(
        key_lines(&hcl),
        [
            ("datacenter", 1),
            ("ports", 2),
            ("http", 3),
            ("retry_join", 5),
            ("server", 6),
            ("n", 7)
        ]
        .map(|(k, l)| (k.to_string(), Some(l)))
    );
    assert_eq!(
        key_lines(&json),
        [
            ("datacenter", 2),
            ("ports", 3),
            ("http", 4),
            ("retry_join", 6),
            ("server", 6),
            ("n", 7)
        ]
        .map(|(k, l)| (k.to_string(), Some(l)))
    );
    let Value::Object(entries) = &json else {
        panic!("an object")
    };
    assert_eq!(
        entries[2].value,
        Value::List(vec![Value::Str("a".into()), Value::Str("b".into())])
    );
    assert_eq!(entries[3].value, Value::Bool(true));
    assert_eq!(entries[4].value, Value::Null);
}

#[test]
fn json_keeps_duplicates_and_reports_syntax_errors_with_position() {
    let v = parse_json(r#"{"a": 1, "a": 2.5}"#).unwrap();
    let Value::Object(entries) = v else {
        panic!("an object")
    };
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].value.kind(), "a fractional number");
    let e = parse_json("{\n  \"a\": 1,\n}").unwrap_err();
    assert_eq!((e.syntax, e.line), ("JSON", 3), "{e}");
    assert!(parse_json("{} {}").is_err(), "trailing data");
    let e = parse_hcl("a = \n").unwrap_err();
    assert_eq!(e.syntax, "HCL", "{e}");
}
