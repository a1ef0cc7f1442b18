//! The vault document parsers on arbitrary bytes: the JSON document every vault stores
//! (`vault::wire`, with any bookkeeping under `_rotor`) and the file vault's age envelope.
//! A vault's contents may be written by anyone with access to it: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rotor::vault::wire::WireDocument;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<WireDocument<serde_json::Value>>(data);
    thread_local! {
        static IDENTITY: age::x25519::Identity = age::x25519::Identity::generate();
    }
    IDENTITY.with(|identity| {
        let _ = age::decrypt(identity, data);
    });
});
