//! One line for an error and its sources, for logs, check outputs and CLI messages.
//!
//! Here, beside the policy, because every binary of the mesh (`meshd`, `meshctl`, `meshproxy`)
//! links this crate: one formatter, so the same failure reads the same everywhere.

use std::error::Error;

/// `e` and its sources on one line, separated by ": " (`error: source: source…`), since a
/// top-level message alone often does not say what went wrong (hyper's "client error
/// (Connect)"). A source whose text the line already ends with is skipped: many errors print
/// their source in their own message, and it would otherwise appear twice.
pub fn error_chain(e: &dyn Error) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = source.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("reading config")]
        Plain(#[source] std::io::Error),
        #[error("reading config: {0}")]
        Repeating(#[source] std::io::Error),
    }

    fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn joins_sources() {
        assert_eq!(
            error_chain(&Outer::Plain(io())),
            "reading config: no such file"
        );
    }

    #[test]
    fn skips_a_source_already_printed() {
        assert_eq!(
            error_chain(&Outer::Repeating(io())),
            "reading config: no such file"
        );
    }

    #[test]
    fn no_source() {
        assert_eq!(error_chain(&io()), "no such file");
    }
}
