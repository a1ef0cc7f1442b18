//! References to secrets in config. A config file never holds a secret value: it says where
//! to find one (an environment variable, a file, or a field of a vault document).

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Where a secret lives. Written `{ env = "NAME" }`, `{ file = "/run/secrets/x" }` or
/// `{ vault = "bao", path = "admin/pg", field = "password" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum SecretRef {
    /// The value of an environment variable of the rotor process.
    Env {
        /// Name of the environment variable.
        env: String,
    },
    /// The contents of a file (a trailing newline is ignored).
    File {
        /// Path of the file.
        file: PathBuf,
    },
    /// A field of the current document at a path of a configured vault.
    Vault {
        /// Name of a `[vaults.NAME]` table.
        vault: String,
        /// Path of the document in that vault.
        path: String,
        /// Field of the document; defaults to `value`.
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env { env } => write!(f, "environment variable {env}"),
            SecretRef::File { file } => write!(f, "file {}", file.display()),
            SecretRef::Vault { vault, path, field } => {
                write!(
                    f,
                    "vault {vault} path {path} field {}",
                    field.as_deref().unwrap_or("value")
                )
            }
        }
    }
}

/// Whether a database URL (`postgres://`, `mysql://`, ...) or a PostgreSQL `key=value` string
/// carries a password, in its user info or as `password=`: config files hold references to
/// secrets, never the values.
pub fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        || url.contains("password=")
}

const EXPECTED: &str = "a secret reference: { env = \"NAME\" }, { file = \"/path\" } or \
                        { vault = \"NAME\", path = \"...\", field = \"...\" }";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretRefVisitor)
    }
}

struct SecretRefVisitor;

impl<'de> Visitor<'de> for SecretRefVisitor {
    type Value = SecretRef;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, _literal: &str) -> Result<SecretRef, E> {
        // The literal is deliberately not echoed: it may be the secret itself.
        Err(E::custom(format!(
            "a literal secret is not allowed in config; expected {EXPECTED}"
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
        let (mut env, mut file, mut vault, mut path, mut field) = (None, None, None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "env" => &mut env,
                "file" => &mut file,
                "vault" => &mut vault,
                "path" => &mut path,
                "field" => &mut field,
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["env", "file", "vault", "path", "field"],
                    ));
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            *slot = Some(map.next_value::<String>()?);
        }
        match (env, file, vault, path, field) {
            (Some(env), None, None, None, None) if !env.is_empty() => Ok(SecretRef::Env { env }),
            (None, Some(file), None, None, None) if !file.is_empty() => {
                Ok(SecretRef::File { file: file.into() })
            }
            (None, None, Some(vault), Some(path), field) => {
                Ok(SecretRef::Vault { vault, path, field })
            }
            (None, None, Some(_), None, _) => Err(de::Error::missing_field("path")),
            _ => Err(de::Error::custom(format!(
                "expected exactly one kind of {EXPECTED}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        secret: SecretRef,
    }

    #[test]
    fn each_reference_form_parses() {
        let h: Holder = toml::from_str("secret = { env = \"TOKEN\" }").unwrap();
        assert_eq!(
            h.secret,
            SecretRef::Env {
                env: "TOKEN".into()
            }
        );
        let h: Holder = toml::from_str("secret = { file = \"/run/x\" }").unwrap();
        assert_eq!(
            h.secret,
            SecretRef::File {
                file: "/run/x".into()
            }
        );
        let h: Holder =
            toml::from_str("secret = { vault = \"bao\", path = \"a/b\", field = \"password\" }")
                .unwrap();
        assert_eq!(
            h.secret,
            SecretRef::Vault {
                vault: "bao".into(),
                path: "a/b".into(),
                field: Some("password".into())
            }
        );
    }

    #[test]
    fn a_literal_is_refused_without_echoing_it() {
        let err = toml::from_str::<Holder>("secret = \"hunter2-literal\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("literal secret is not allowed"), "{err}");
        assert!(
            !err.contains("hunter2-literal") || err.contains("secret = \"hunter2-literal\""),
            "{err}"
        );
    }

    #[test]
    fn mixed_or_unknown_forms_are_refused() {
        assert!(toml::from_str::<Holder>("secret = { env = \"A\", file = \"/b\" }").is_err());
        assert!(toml::from_str::<Holder>("secret = { envv = \"A\" }").is_err());
        assert!(toml::from_str::<Holder>("secret = { vault = \"bao\" }").is_err());
    }
}
