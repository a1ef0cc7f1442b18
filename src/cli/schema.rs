//! `rotor schema`: the JSON Schema of config files, for editors and CI.

use super::{CliResult, Exit, print_json};

pub fn run() -> CliResult {
    print_json(&crate::config::schema())?;
    Ok(Exit::Ok)
}
