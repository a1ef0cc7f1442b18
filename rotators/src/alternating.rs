//! What the rotators whose credential is one of two accounts taking turns share (PostgreSQL
//! roles, MariaDB accounts, Redis ACL users): which account is next, how the two accounts'
//! privileges are compared, and how preflight and a failed `verify_query` are reported.

use crate::{ErrorClass, RotatorError};

/// The account a new credential goes to: the one of `accounts` that `current` does not use
/// (the only one when there is one).
pub fn partner<'a>(accounts: &'a [String], current: Option<&str>) -> &'a str {
    accounts
        .iter()
        .find(|a| Some(a.as_str()) != current)
        .or(accounts.first())
        .expect("validated: one account, or two distinct ones")
}

/// What one of two accounts may do that the other may not, each privilege as a comparable
/// line: "b has `line` but a has not".
pub fn drift(a: &str, a_lines: &[String], b: &str, b_lines: &[String]) -> Vec<String> {
    let only = |x: &str, xs: &[String], y: &str, ys: &[String]| {
        xs.iter()
            .filter(|l| !ys.contains(l))
            .map(|l| format!("{x} has `{l}` but {y} has not"))
            .collect::<Vec<_>>()
    };
    let mut found = only(a, a_lines, b, b_lines);
    found.extend(only(b, b_lines, a, a_lines));
    found
}

/// Preflight's verdict: every problem found, or none.
pub fn verdict(problems: Vec<String>) -> Result<(), RotatorError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RotatorError::permanent(format!(
            "preflight found: {}",
            problems.join("; ")
        )))
    }
}

/// A `verify_query` that fails for the new account, though its login worked, is privilege
/// drift, not an outage: permanent, unless the server went away.
pub fn as_drift(mut e: RotatorError) -> RotatorError {
    if e.class == ErrorClass::Transient && !e.message.contains("unreachable") {
        e.class = ErrorClass::Permanent;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_account_is_the_one_not_in_use() {
        let two = ["app_a".to_owned(), "app_b".to_owned()];
        assert_eq!(partner(&two, None), "app_a");
        assert_eq!(partner(&two, Some("app_a")), "app_b");
        assert_eq!(partner(&two, Some("app_b")), "app_a");
        let one = ["app".to_owned()];
        assert_eq!(
            partner(&one, Some("app")),
            "app",
            "in place: the one account"
        );
    }

    #[test]
    fn drift_names_each_side_and_a_failed_query_is_permanent() {
        let a = ["select".to_owned(), "insert".to_owned()];
        let b = ["select".to_owned(), "delete".to_owned()];
        assert_eq!(
            drift("a", &a, "b", &b),
            [
                "a has `insert` but b has not",
                "b has `delete` but a has not"
            ]
        );
        assert!(drift("a", &a, "b", &a).is_empty());
        assert!(verdict(Vec::new()).is_ok());
        assert_eq!(
            verdict(vec!["x".into(), "y".into()]).unwrap_err().message,
            "preflight found: x; y"
        );
        let denied = as_drift(RotatorError::transient("permission denied (rotor retries)"));
        assert_eq!(denied.class, ErrorClass::Permanent);
        let gone = as_drift(RotatorError::transient(
            "the server is unreachable; rotor retries",
        ));
        assert_eq!(gone.class, ErrorClass::Transient);
    }
}
