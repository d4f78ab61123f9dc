//! One way to print an error with its causes: libraries such as reqwest stop their `Display`
//! at "error sending request", and the cause ("connection refused") is what a user acts on.

use std::error::Error;

/// `e` followed by each source in turn, `": "`-separated, skipping a cause whose text the
/// message already holds (many errors repeat their source in their own `Display`).
pub fn display_chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Leaf(&'static str);

    #[derive(Debug, thiserror::Error)]
    #[error("{msg}")]
    struct Outer {
        msg: &'static str,
        #[source]
        source: Leaf,
    }

    #[test]
    fn causes_follow_once() {
        let e = Outer {
            msg: "error sending request",
            source: Leaf("connection refused"),
        };
        assert_eq!(
            display_chain(&e),
            "error sending request: connection refused"
        );
        let repeated = Outer {
            msg: "connect: connection refused",
            source: Leaf("connection refused"),
        };
        assert_eq!(display_chain(&repeated), "connect: connection refused");
    }
}
