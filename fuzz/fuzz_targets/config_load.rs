//! The config loader on arbitrary text: every input gets `Ok` or diagnostics with positions,
//! never a panic (the loader reads operators' files, and `validate` is run on anything).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rotor::config::load_text(std::path::Path::new("fuzz.toml"), text.to_owned());
    }
});
