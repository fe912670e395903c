//! Table-driven tests of the filter: every operator and its negation on every JSON type,
//! precedence, ANY-element selection through lists, errors with their positions, and the
//! printed form parsing back to the same tree.

use serde_json::{Value, json};

use super::{Filter, FilterError, MAX_DEPTH, MAX_LEN};

/// A `/v1/health/service` row.
fn row() -> Value {
    json!({
        "Node": {"Node": "n1", "Address": "10.0.0.1", "Meta": {"rack": "r1", "key with space": "yes"}},
        "Service": {
            "ID": "web-1", "Service": "web", "Tags": ["v2", "primary"], "Port": 8080,
            "Meta": {"env": "prod", "empty": ""}, "EnableTagOverride": false,
            "Weights": {"Passing": 1.5}, "Proxy": null
        },
        "Checks": [
            {"CheckID": "serfHealth", "Status": "passing"},
            {"CheckID": "service:web-1", "Status": "critical"}
        ],
        "NoTags": null,
        "Empty": []
    })
}

fn eval(expr: &str) -> Result<bool, FilterError> {
    Filter::parse(expr)?.matches(&row())
}

#[test]
fn operators_on_every_type() {
    let cases: &[(&str, bool)] = &[
        // == / != on strings, numbers (coerced), booleans (Go ParseBool), bare words.
        (r#"Service.Service == "web""#, true),
        (r#"Service.Service == `web`"#, true),
        ("Service.Service == web", true),
        (r#"Service.Service != "web""#, false),
        ("Service.Port == 8080", true),
        (r#"Service.Port == "8080""#, true),
        ("Service.Port != 80", true),
        ("Service.EnableTagOverride == false", true),
        ("Service.EnableTagOverride == F", true),
        ("Service.Weights.Passing == 1.5", true),
        // in / contains on a list, a map (keys) and a string (substring).
        (r#""v2" in Service.Tags"#, true),
        (r#""v3" in Service.Tags"#, false),
        (r#""v3" not in Service.Tags"#, true),
        (r#"Service.Tags contains "primary""#, true),
        (r#"Service.Tags not contains "primary""#, false),
        (r#""env" in Service.Meta"#, true),
        (r#""prod" in Service.Meta"#, false),
        (r#""we" in Service.Service"#, true),
        (r#"Service.ID contains "-1""#, true),
        // is empty / is not empty on strings, lists, maps, null.
        ("Service.Tags is not empty", true),
        ("Empty is empty", true),
        ("Service.Meta.empty is empty", true),
        ("Service.Meta is empty", false),
        ("NoTags is empty", true),
        // matches / not matches (unanchored search).
        (r#"Service.ID matches "^web-[0-9]+$""#, true),
        (r#"Service.ID matches "eb""#, true),
        (r#"Service.ID not matches "^db""#, true),
        // Map keys: dotted, indexed, quoted-pointer forms; a missing key is "not present".
        (r#"Service.Meta.env == "prod""#, true),
        (r#"Service.Meta["env"] == "prod""#, true),
        (r#"Node.Meta["key with space"] == "yes""#, true),
        (r#""/Service/Meta/env" == "prod""#, true),
        (r#"Service.Meta.missing == "x""#, false),
        (r#"Service.Meta.missing != "x""#, true),
        (r#""x" in Service.Meta.missing"#, false),
        (r#""x" not in Service.Meta.missing"#, true),
        ("Service.Meta.missing is empty", true),
        ("Service.Meta.missing is not empty", false),
        (r#"Service.Meta.missing matches ".*""#, false),
        (r#"Service.Meta.missing not matches ".*""#, true),
        (r#"Service.Proxy.DestinationServiceName == "x""#, false),
        // Through a list: ANY element; by index: that element.
        ("Checks.Status == critical", true),
        ("Checks.Status == warning", false),
        ("Checks.Status != passing", true),
        (r#"Checks.CheckID matches "^service:""#, true),
        ("Checks.0.Status == passing", true),
        ("Checks.1.Status == passing", false),
        ("Checks.7.Status == passing", false),
        ("Empty.Status == passing", false),
        ("Empty.Status != passing", false),
    ];
    for (expr, want) in cases {
        assert_eq!(eval(expr), Ok(*want), "{expr}");
    }
}

#[test]
fn precedence_and_grouping() {
    let t = r#"Service.Service == "web""#;
    let f = r#"Service.Service == "db""#;
    let cases = [
        // and binds tighter than or; not tighter than and.
        (format!("{f} and {f} or {t}"), true),
        (format!("{t} or {f} and {f}"), true),
        (format!("({t} or {f}) and {f}"), false),
        (format!("not {t} or {t}"), true),
        (format!("not ({t} or {t})"), false),
        (format!("not {f} and {t}"), true),
        (format!("not not {t}"), true),
        (format!("not not not {t}"), false),
        (format!("( {t} )"), true),
        (format!("\n{t}\tand\r\n{t} "), true),
    ];
    for (expr, want) in cases {
        assert_eq!(eval(&expr), Ok(want), "{expr}");
    }
    assert_eq!(
        Filter::parse("a == 1 and b == 2 or c == 3")
            .map(|f| f.to_string())
            .as_deref(),
        Ok(r#"a == "1" and b == "2" or c == "3""#)
    );
}

/// The error's text, as the HTTP layer shows it.
fn error(expr: &str) -> String {
    match Filter::parse(expr) {
        Ok(f) => match f.matches(&row()) {
            Ok(v) => panic!("{expr:?} parsed and evaluated to {v}"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_say_where() {
    let cases = [
        (
            "foo",
            "1:4 (3): no match found at end of input, expected: \"!=\", \"==\"",
        ),
        (
            "Address == 10.10.10.10",
            "1:12 (11): rule \"number\": Invalid number literal",
        ),
        (
            "Node==host-name",
            "1:11 (10): no match found at '-', expected: \"and\", \"or\"",
        ),
        ("a == 1 and\n  (b == 2", "2:10 (20): Unmatched parentheses"),
        (
            "a == \"open",
            "1:6 (5): rule \"string\": Unterminated string literal",
        ),
        (
            "a == \"bad \\q\"",
            "1:6 (5): rule \"string\": invalid syntax: unknown escape \\q",
        ),
        ("a[1] == 2", "1:2 (1): rule \"index\": Invalid index"),
        (
            "a[\"k\" == 2",
            "1:2 (1): rule \"index\": Unclosed index expression",
        ),
        (
            "a matches \"(\"",
            "1:11 (10): Failed to compile regular expression \"(\"",
        ),
        (
            "\"v\" == a",
            "1:4 (3): a string or number can only be followed by \"in\"",
        ),
        ("\"v\" in 3", "1:8 (7): rule \"match\": Invalid selector"),
        (
            "a is full",
            "1:6 (5): no match found at 'f', expected: \"empty\" or \"not\"",
        ),
        ("é == 1", "1:1 (0): no match found at 'é'"),
        (
            "a == 1 x",
            "1:8 (7): no match found at 'x', expected: \"and\", \"or\"",
        ),
        // Evaluation: an operator the selected value does not support.
        (
            "Service.Tags == v2",
            "Failed to apply filter to selector \"Service.Tags\": Invalid match operator \"Equal\" for a list value",
        ),
        (
            "Service.Port == eighty",
            "Failed to coerce value \"eighty\": the field holds an integer",
        ),
        (
            "Service.Port matches \"8\"",
            "Invalid match operator \"Matches\" for a number value",
        ),
        (
            "\"x\" in Service.Port",
            "cannot perform in/contains operations on a number",
        ),
        (
            "Service.Service.Name == x",
            "a string has no field \"Name\"",
        ),
    ];
    for (expr, want) in cases {
        let got = error(expr);
        assert!(got.contains(want), "{expr:?}: got {got:?}, want {want:?}");
    }
}

#[test]
fn selectors_are_checked_against_the_rows_fields() {
    let fields = ["Node", "Service", "Checks"];
    let ok =
        Filter::parse("Service.Tags is empty or Node.Meta.x == y").map(|f| f.check_fields(&fields));
    assert_eq!(ok, Ok(Ok(())));
    let bad =
        Filter::parse("Service.Tags is empty or Servce.Port == 1").map(|f| f.check_fields(&fields));
    let Ok(Err(e)) = bad else { panic!("{bad:?}") };
    assert!(e.is_creation());
    assert_eq!(
        e.to_string(),
        "Selector \"Servce.Port\" is not valid (valid selectors start with one of: Node, Service, Checks)"
    );
}

#[test]
fn input_length_and_nesting_are_bounded() {
    let long = format!("a == \"{}\"", "x".repeat(MAX_LEN));
    assert!(error(&long).contains("at most 8192 are accepted"));
    let deep = format!(
        "{}a == 1{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert!(
        error(&deep).contains("more than 64 deep"),
        "{}",
        error(&deep)
    );
    let nots = format!("{}a == 1", "not ".repeat(MAX_DEPTH + 1));
    assert!(
        error(&nots).contains("more than 64 deep"),
        "{}",
        error(&nots)
    );
    let ok = format!("{}a == 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(Filter::parse(&ok).is_ok());
    // A long chain of `or` is one node, whatever its length.
    let chain = vec!["a == 1"; 700].join(" or ");
    assert!(Filter::parse(&chain).is_ok());
}

#[test]
fn printing_parses_back_to_the_same_tree() {
    let cases = [
        r#"Service.Meta["key with \x22quotes\x22 and \\"] == "a\x22b""#,
        r#""/Service/Meta/a~1b" == `raw "text"` and "/0/x" is empty"#,
        r#""/a-b/c" != "\n\t" or not ("v" not in Service.Tags)"#,
        r#"Checks.0.Status matches "^p" and x.01 not matches "a\\d""#,
        r#""" in """#,
        "not == 1 or not in x",
        "a contains b.c and -1.5 in d",
        "(a == 1 or b == 2) and not (c == 3 and (d == 4 or e == 5)) or ((f == 6))",
    ];
    for expr in cases {
        let f = Filter::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
        let printed = f.to_string();
        let again = Filter::parse(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e}"));
        assert_eq!(f, again, "{expr:?} printed as {printed:?}");
    }
}
