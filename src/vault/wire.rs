//! How a credential document travels as JSON (vault files, KV v2 data): the credential's
//! fields at the top level, `previous` (the same fields) during grace, and an optional `_rotor`
//! object of bookkeeping. Secret values go straight between `SecretString`s and the (zeroized)
//! buffer the caller provides: never through a plain intermediate value.

use std::fmt;
use std::marker::PhantomData;

use rotor_rotators::Credential;
use secrecy::{ExposeSecret, SecretString};
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A document with bookkeeping of type `M` under `_rotor`.
pub struct WireDocument<M> {
    pub fields: Credential,
    pub previous: Option<Credential>,
    pub meta: Option<M>,
}

/// The key of rotor's bookkeeping inside a document.
pub const META_KEY: &str = "_rotor";
/// The key of the previous version's fields during grace.
pub const PREVIOUS_KEY: &str = "previous";

struct Fields<'a>(&'a Credential);

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.0.fields() {
            map.serialize_entry(k, v.expose_secret())?;
        }
        map.end()
    }
}

impl<M: Serialize> Serialize for WireDocument<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.fields.fields() {
            map.serialize_entry(k, v.expose_secret())?;
        }
        if let Some(previous) = &self.previous {
            map.serialize_entry(PREVIOUS_KEY, &Fields(previous))?;
        }
        if let Some(meta) = &self.meta {
            map.serialize_entry(META_KEY, meta)?;
        }
        map.end()
    }
}

struct SecretFields(Credential);

impl<'de> Deserialize<'de> for SecretFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretFields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretFields, A::Error> {
                let mut c = Credential::new();
                while let Some(k) = map.next_key::<String>()? {
                    c.insert(&k, map.next_value::<SecretString>()?);
                }
                Ok(SecretFields(c))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de, M: DeserializeOwned> Deserialize<'de> for WireDocument<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<M>(PhantomData<M>);
        impl<'de, M: DeserializeOwned> Visitor<'de> for V<M> {
            type Value = WireDocument<M>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a credential document: an object of string fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireDocument<M>, A::Error> {
                let mut fields = Credential::new();
                let (mut previous, mut meta) = (None, None);
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        PREVIOUS_KEY => previous = Some(map.next_value::<SecretFields>()?.0),
                        META_KEY => meta = Some(map.next_value::<M>()?),
                        _ => fields.insert(&k, map.next_value::<SecretString>()?),
                    }
                }
                Ok(WireDocument {
                    fields,
                    previous,
                    meta,
                })
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl<M> WireDocument<M> {
    /// Bytes that hold this document as JSON with room to spare: escaping at most doubles a
    /// value, plus keys, punctuation and bookkeeping.
    pub fn json_capacity(&self) -> usize {
        let fields = |c: &Credential| -> usize {
            c.fields()
                .map(|(k, v)| k.len() + 2 * v.expose_secret().len() + 8)
                .sum()
        };
        2 * (fields(&self.fields) + self.previous.as_ref().map_or(0, fields)) + 1024
    }
}

/// Serializes `value` into a zeroized buffer of `capacity` bytes. Sized up front, the buffer
/// never reallocates, so no copy of a secret is left behind in freed memory.
pub fn to_zeroized_json(value: &impl Serialize, capacity: usize) -> zeroize::Zeroizing<Vec<u8>> {
    let mut buffer = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
    serde_json::to_writer(&mut *buffer, value).expect("documents serialize");
    buffer
}

/// A `serde_json` error described without the input it choked on (which may be a secret).
pub fn describe_json_error(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}
