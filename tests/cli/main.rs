//! The real `rotor` binary, driven as an operator would: one test binary, a small builder
//! (`support::Rotor`) and real processes.

#[path = "../support/mod.rs"]
mod support;

mod alerts;
mod aws_iam_access_key;
mod conformance;
mod crash;
mod daemon;
mod deploy;
mod drill;
mod github;
mod http;
mod leaks;
mod manual;
mod metrics;
mod notify;
mod postgres_password;
mod providers;
mod redis_acl_password;
mod rotation;
mod scale;
mod traces;
mod validate;

/// A config with `n` generated credentials in a file vault, with the given grace.
pub fn generated_config(n: usize, grace: &str) -> String {
    let mut text = format!(
        r#"
[defaults]
grace = "{grace}"
alerts = ["log"]
retry = {{ max_attempts = 3, initial = "1s", max = "2s" }}

[vaults.local]
kind = "file"
dir = "vault"
identity = {{ file = "vault.key" }}

[alerts.log]
kind = "log"
"#
    );
    for i in 0..n {
        text.push_str(&format!(
            "\n[[credential]]\nid = \"app/key{i}\"\nschedule = {{ every = \"30d\" }}\nvault = {{ name = \"local\", path = \"app/key{i}\" }}\nrotator = {{ kind = \"generated\", length = 40, alphabet = \"alphanumeric\" }}\n"
        ));
    }
    text
}
