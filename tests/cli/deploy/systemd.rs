//! `deploy/systemd/rotor.service`, checked by systemd's own `systemd-analyze`: the unit verifies
//! without a warning, and its sandbox keeps the exposure systemd measures at "OK".

use std::path::Path;
use std::process::{Command, Output};

use super::deploy;
use crate::support::require_program;

/// A scratch root with what `verify` looks for: the unit, the binaries its commands name at
/// their paths (rotor itself as built for these tests) and the system's targets.
fn scratch_root(dir: &Path) {
    let unit = deploy("systemd/rotor.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let units = dir.join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::copy(&unit, units.join("rotor.service")).unwrap();
    for line in text.lines() {
        let Some((key, command)) = line.split_once('=') else {
            continue;
        };
        if !key.starts_with("Exec") {
            continue;
        }
        let program = command.split_whitespace().next().unwrap();
        let from = if program.ends_with("/rotor") {
            Path::new(env!("CARGO_BIN_EXE_rotor")).to_path_buf()
        } else {
            Path::new(program).to_path_buf()
        };
        let to = dir.join(program.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to)
            .unwrap_or_else(|e| panic!("{} for the unit's {key}: {e}", from.display()));
    }
    let targets = dir.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&targets).unwrap();
    for entry in std::fs::read_dir("/lib/systemd/system").unwrap().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".target") && entry.path().is_file() {
            std::fs::copy(entry.path(), targets.join(name)).unwrap();
        }
    }
}

fn analyze(root: &Path, args: &[&str]) -> Output {
    let analyze = require_program("systemd-analyze", "apt-get install -y systemd");
    Command::new(analyze)
        .arg(format!("--root={}", root.display()))
        .args(args)
        .arg("/etc/systemd/system/rotor.service")
        .output()
        .unwrap()
}

#[test]
fn the_unit_verifies_without_a_warning_and_its_exposure_stays_ok() {
    let dir = tempfile::tempdir().unwrap();
    scratch_root(dir.path());
    let out = analyze(dir.path(), &["verify"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `verify` exits 0 on an unknown key; what it prints is the finding.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify rotor.service:\n{said}"
    );
    // Exposure on systemd's scale of 0 to 10, in tenths: 20 is the top of "OK".
    let out = analyze(dir.path(), &["security", "--offline=yes", "--threshold=20"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the unit's exposure rose above 2.0:\n{}",
        said.lines()
            .filter(|l| l.starts_with('✗') || l.contains("Overall"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
