//! `rotor identify`: a value found in the wild, read from stdin, is named as the current, the
//! previous or a retired version of its credential (or as unknown), `--rotate` replaces it as an
//! emergency, and the value is never in the output, the logs or the store.

use std::io::Write;
use std::process::{Output, Stdio};

use crate::generated_config;
use crate::rotation::read_document;
use crate::support::{Rotor, assert_secrets_absent};

/// `rotor identify ARGS` with `value` (and a newline) on stdin, logging at debug level.
fn identify(rotor: &Rotor, value: &str, args: &[&str]) -> Output {
    let mut all = vec!["--log", "debug", "identify"];
    all.extend_from_slice(args);
    let mut child = rotor
        .command(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{value}").unwrap();
    child.wait_with_output().unwrap()
}

fn current_value(rotor: &Rotor) -> String {
    read_document(rotor, "app/key0")["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn identify_names_current_previous_retired_and_unknown_values_and_rotates_on_request() {
    let rotor = Rotor::new(&generated_config(2, "1h"));
    rotor.ok(&["rotate", "app/key0"]);
    rotor.ok(&["rotate", "app/key1"]);
    let first = current_value(&rotor);
    rotor.ok(&["rotate", "app/key0"]);
    let second = current_value(&rotor);
    let mut output = Vec::new();
    let mut check = |value: &str, args: &[&str], code: i32, expect: &[&str]| {
        let out = identify(&rotor, value, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(code), "{out:?}");
        for e in expect {
            assert!(stdout.contains(e), "{e:?} not in:\n{stdout}");
        }
        output.extend_from_slice(&out.stdout);
        output.extend_from_slice(&out.stderr);
    };

    check(
        &second,
        &[],
        0,
        &[
            "app/key0 (field `value`, version 2",
            "CURRENT",
            "the credential is grace",
        ],
    );
    check(
        &first,
        &[],
        0,
        &[
            "app/key0 (field `value`, version 1",
            "PREVIOUS",
            "until run",
        ],
    );
    check(
        "not-a-value-rotor-minted-0123456789",
        &[],
        4,
        &["no credential rotor manages holds this value"],
    );

    rotor.ok(&["cancel", "app/key0", "--retire-now", "--reason", "test"]);
    check(
        &first,
        &[],
        0,
        &["version 1", "RETIRED by run", "no longer authenticates"],
    );

    check(
        &second,
        &["--rotate", "--reason", "found in a gist"],
        0,
        &["CURRENT", "rotated app/key0 (emergency)"],
    );
    let third = current_value(&rotor);
    assert_ne!(third, second);
    check(&second, &[], 0, &["version 2", "RETIRED"]);
    assert!(crate::emergency::audit_text(&rotor).contains("found in a gist"));

    assert_secrets_absent(&[&first, &second, &third], &output, rotor.dir.path());
}

#[test]
fn a_value_minted_before_fingerprints_were_recorded_is_found_in_the_vault() {
    let rotor = Rotor::new(&generated_config(1, "1h"));
    rotor.ok(&["rotate", "app/key0"]);
    let value = current_value(&rotor);
    // As a store written by an older rotor: no value fingerprints.
    crate::rotation::sqlite(&rotor.path("rotor.db"), "DELETE FROM value_fingerprints");
    let out = identify(&rotor, &value, &[]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("app/key0 (field `value`, version 1): the CURRENT version"),
        "{stdout}"
    );
}

#[test]
fn an_empty_stdin_is_a_usage_error() {
    let rotor = Rotor::new(&generated_config(1, "1h"));
    let out = identify(&rotor, "", &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no value on stdin"));
}
