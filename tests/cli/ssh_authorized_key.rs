//! `ssh_authorized_key` against a real OpenSSH `sshd` on loopback (tests/support/sshd.rs):
//! rotations that leave other keys alone, a changed host key refused, a host down during
//! retirement that heals by itself, and what `rotor policy` prints.

use std::time::Duration;

use crate::providers::{Fixture, Provider, current, field, setup};
use crate::support::Rotor;

fn rotor_for(unique: &str) -> (Rotor, Fixture) {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Ssh, unique, rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("1s", rotor.dir.path())).unwrap();
    (rotor, fixture)
}

#[test]
fn a_rotation_adds_the_new_key_on_its_own_line_and_removes_exactly_the_old_one() {
    let (rotor, fixture) = rotor_for("ssh_rotation");
    let sshd = fixture.sshd.as_ref().unwrap();
    // The neighbour's line has lost its line end (an editor that does not add one).
    let text = std::fs::read_to_string(&sshd.authorized_keys).unwrap();
    std::fs::write(&sshd.authorized_keys, text.trim_end()).unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let first = current(&rotor);
    assert!(
        fixture.accepts(&first),
        "the first key logs in: {}",
        sshd.log()
    );
    assert!(
        field(&first, "public_key").contains(" rotor:"),
        "tagged with rotor's run token"
    );
    rotor.ok(&["rotate", "app/key0", "--no-wait"]);
    rotor.ok(&["run", "--once"]);
    let second = current(&rotor);
    assert!(
        fixture.accepts(&first) && fixture.accepts(&second),
        "both keys log in during grace"
    );
    assert_eq!(
        rotor.run_until_completed("app/key0", Duration::from_millis(1100)),
        "completed"
    );
    fixture.check_rotated(&second, &first);
}

#[test]
fn a_changed_host_key_is_refused_and_nothing_is_written() {
    let (rotor, fixture) = rotor_for("ssh_hostkey");
    let sshd = fixture.sshd.as_ref().unwrap();
    let (_, impostor) = rotor_rotators::sshkey::ed25519_openssh("impostor");
    let body = impostor.rsplit_once(' ').unwrap().0;
    std::fs::write(
        &sshd.known_hosts,
        format!("[127.0.0.1]:{} {body}\n", sshd.port),
    )
    .unwrap();
    let before = sshd.lines();
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let error = rotor.step_error("app/key0", "apply");
    assert!(
        error.contains("differs from line 1") && error.contains("known_hosts"),
        "{error}"
    );
    assert_eq!(
        sshd.lines(),
        before,
        "nothing written to a host rotor could not trust"
    );
}

#[test]
fn a_host_down_during_retirement_heals_by_itself() {
    let (rotor, fixture) = rotor_for("ssh_down");
    let sshd = fixture.sshd.as_ref().unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let first = current(&rotor);
    rotor.ok(&["rotate", "app/key0", "--no-wait"]);
    rotor.ok(&["run", "--once"]);
    let second = current(&rotor);
    sshd.stop();
    std::thread::sleep(Duration::from_millis(1100));
    rotor.ok(&["run", "--once"]);
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_ne!(history[0]["state"], "completed", "{}", history[0]);
    let error = rotor.step_error("app/key0", "retire");
    assert!(
        error.contains("127.0.0.1") && error.contains("rotor retries"),
        "{error}"
    );
    sshd.restart();
    assert_eq!(
        rotor.run_until_completed("app/key0", Duration::from_millis(1100)),
        "completed"
    );
    fixture.check_rotated(&second, &first);
}

#[test]
fn policy_prints_how_to_pin_each_host_key() {
    let (rotor, fixture) = rotor_for("ssh_policy");
    let sshd = fixture.sshd.as_ref().unwrap();
    let out = rotor.ok(&["policy", "app/key0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "ssh-keyscan -p {} -t ed25519 127.0.0.1",
            sshd.port
        )),
        "{text}"
    );
    assert!(text.contains("from=\""), "{text}");
}
