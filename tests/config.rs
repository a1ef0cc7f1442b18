//! The config's shape as operators meet it: every property of `rotor schema` says what it is,
//! and every kind of every plug-in family has an example under `schedules/` that loads.

use std::collections::BTreeSet;
use std::path::PathBuf;

use rotor::alert::AlertConfig;
use rotor::notify::HookConfig;
use rotor::vault::VaultConfig;
use rotor_rotators::RotatorConfig;
use rotor_rotators::kinds::Kinds;

/// Every property, with the path to it, whose schema has no description. A `kind` (or other
/// tag) property is a constant: the variant it selects carries the description.
fn undescribed(schema: &serde_json::Value) -> Vec<String> {
    let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
    let described = |v: &serde_json::Value| {
        if v.get("description").is_some() || v.get("const").is_some() {
            return true;
        }
        let reference = v["$ref"]
            .as_str()
            .or_else(|| v["allOf"][0]["$ref"].as_str());
        reference.is_some_and(|r| {
            let name = r.rsplit('/').next().unwrap_or_default();
            defs.get(name)
                .is_some_and(|d| d.get("description").is_some())
        })
    };
    let mut missing = Vec::new();
    let mut stack = vec![(String::new(), schema)];
    while let Some((path, node)) = stack.pop() {
        match node {
            serde_json::Value::Object(map) => {
                if let Some(properties) = map.get("properties").and_then(|p| p.as_object()) {
                    for (name, property) in properties {
                        if !described(property) {
                            missing.push(format!("{path}/properties/{name}"));
                        }
                    }
                }
                for (key, value) in map {
                    stack.push((format!("{path}/{key}"), value));
                }
            }
            serde_json::Value::Array(items) => {
                for (i, value) in items.iter().enumerate() {
                    stack.push((format!("{path}/{i}"), value));
                }
            }
            _ => {}
        }
    }
    missing.sort();
    missing
}

#[test]
fn every_property_of_the_schema_has_a_description() {
    let schema = rotor::config::schema();
    assert!(
        schema
            .pointer("/$defs/CredentialConfig/properties/rotator")
            .is_some(),
        "the schema holds the rotators"
    );
    let missing = undescribed(&schema);
    assert!(
        missing.is_empty(),
        "properties without a description (add a doc comment to the field): {missing:#?}"
    );
}

#[test]
fn the_description_check_finds_a_property_without_one() {
    let schema = serde_json::json!({
        "properties": { "described": { "type": "string", "description": "yes" } },
        "$defs": { "A": { "properties": {
            "bare": { "type": "string" },
            "kind": { "type": "string", "const": "a" }
        } } }
    });
    assert_eq!(undescribed(&schema), ["/$defs/A/properties/bare"]);
}

#[test]
fn every_kind_of_every_family_has_an_example_that_loads() {
    let schedules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let config = rotor::config::load(&[schedules]).unwrap_or_else(|d| panic!("{d}"));
    let missing = |family: &str, known: &[&str], used: BTreeSet<&str>| {
        known
            .iter()
            .filter(|k| !used.contains(*k))
            .map(|k| format!("{family} `{k}`"))
            .collect::<Vec<_>>()
    };
    let mut absent = Vec::new();
    absent.extend(missing(
        "vault",
        VaultConfig::KINDS,
        config.vaults.values().map(|v| v.kind()).collect(),
    ));
    absent.extend(missing(
        "alert",
        AlertConfig::KINDS,
        config.alerts.values().map(|a| a.kind()).collect(),
    ));
    absent.extend(missing(
        "hook",
        HookConfig::KINDS,
        config.hooks.values().map(|h| h.kind()).collect(),
    ));
    absent.extend(missing(
        "rotator",
        RotatorConfig::KINDS,
        config
            .credentials
            .iter()
            .map(|c| c.rotator.kind())
            .collect(),
    ));
    assert!(
        absent.is_empty(),
        "kinds without an example under schedules/: {absent:?}"
    );
}

/// A folder of schedules as a Kubernetes ConfigMap mount holds it: the file in a hidden
/// timestamped folder, a hidden `..data` link to that folder, and a link to the file through
/// it. Read once, not three times (which would declare every credential thrice).
#[test]
fn a_folder_mounted_from_a_config_map_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = "..2026_12_04_00_00_00.000000001";
    std::fs::create_dir(dir.path().join(stamp)).unwrap();
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schedules/quickstart.toml"),
        dir.path().join(stamp).join("rotor.toml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(stamp, dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/rotor.toml", dir.path().join("rotor.toml")).unwrap();
    std::fs::write(dir.path().join(".rotor.toml.swp"), "not toml").unwrap();
    let config = rotor::config::load(&[dir.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.sources, vec![dir.path().join("rotor.toml")]);
    assert_eq!(config.credentials.len(), 3);
}
