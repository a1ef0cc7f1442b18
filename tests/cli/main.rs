//! The real `rotor` binary, driven as an operator would: one test binary, a small builder
//! (`support::Rotor`) and real processes.

#[path = "../support/mod.rs"]
mod support;

mod adoption;
mod alerts;
mod audit;
mod aws_iam_access_key;
mod cancel;
mod conformance;
mod crash;
mod daemon;
mod deploy;
mod drill;
mod emergency;
mod files;
mod gcp_secret_manager;
mod github;
mod http;
mod identify;
mod leaks;
mod manual;
mod metrics;
mod mysql_password;
mod notify;
mod pause;
mod postgres_password;
mod providers;
mod recovery;
mod redirects;
mod redis_acl_password;
mod rotation;
mod scale;
mod ssh_authorized_key;
mod traces;
mod validate;

pub use support::generated_config;
