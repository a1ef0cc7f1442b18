//! The one shape every plug-in family takes (rotators, vaults, alert sinks, notify hooks).
//!
//! A family is a closed set of kinds declared once with [`kinds!`](crate::kinds): the config
//! enum tagged by `kind` whose variants box each kind's settings struct (which lives beside
//! the kind's code), the list of kinds for error messages, and a deserializer by kind that the
//! config loader drives so that error positions stay exact. Each kind's settings implement the
//! family's settings trait, which extends [`Settings`]: what serde cannot check, and the secret
//! references to check against the declared vaults. A kind behind a Cargo feature is declared
//! with `#[cfg(feature = "KIND")]` and is then gone from the build, the schema and the list.

use crate::SecretRef;

/// What every kind's settings answer, whatever the family.
pub trait Settings {
    /// Checks what serde cannot (a URL that parses, a usable length, a user the strategy
    /// allows); the error says what is wrong and what is expected.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// The secret references in these settings, so that the loader can check that the vaults
    /// they name exist.
    fn secret_refs(&self) -> Vec<&SecretRef> {
        Vec::new()
    }

    /// The network endpoints these settings send secrets to, so that the loader can refuse a
    /// transport that does not protect them (`crate::net::transport_problem`).
    fn endpoints(&self) -> Vec<crate::net::Endpoint<'_>> {
        Vec::new()
    }
}

/// A family's config enum, as declared by [`kinds!`](crate::kinds).
pub trait Kinds: Sized {
    /// Every `kind` this build knows, for error messages.
    const KINDS: &'static [&'static str];

    /// This config's `kind`.
    fn kind(&self) -> &'static str;

    /// The kind's settings, as every family sees them.
    fn common(&self) -> &dyn Settings;

    /// Deserializes the fields of the kind named `kind` (the `kind` key removed), or `None`
    /// when this build has no such kind.
    fn deserialize_kind<'de, D: serde::Deserializer<'de>>(
        kind: &str,
        fields: D,
    ) -> Result<Option<Self>, D::Error>;
}

/// Declares a plug-in family: `enum NAME: SETTINGS_TRAIT { "kind" => Variant(SettingsType), }`,
/// each kind with its doc comment (the schema's description), an optional `#[cfg(...)]` and
/// optional aliases (`"kind" | "alias"`). Generates the enum (variants boxed: one per
/// credential or sink, and many must not each pay for the largest kind), its [`Kinds`]
/// implementation and `settings()`, the kind's settings as the family's trait object.
#[macro_export]
macro_rules! kinds {
    (
        $(#[$attr:meta])*
        $vis:vis enum $name:ident: $settings:path {
            $(
                $(#[doc = $doc:literal])*
                $(#[cfg($cfg:meta)])?
                $kind:literal $(| $alias:literal)* => $variant:ident($config:ty),
            )*
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
        #[serde(tag = "kind", deny_unknown_fields)]
        $vis enum $name {
            $(
                $(#[doc = $doc])*
                $(#[cfg($cfg)])?
                #[serde(rename = $kind $(, alias = $alias)*)]
                $variant(Box<$config>),
            )*
        }

        impl $crate::kinds::Kinds for $name {
            const KINDS: &'static [&'static str] = &[$( $(#[cfg($cfg)])? $kind, )*];

            fn kind(&self) -> &'static str {
                match *self {
                    $( $(#[cfg($cfg)])? $name::$variant(_) => $kind, )*
                }
            }

            fn common(&self) -> &dyn $crate::kinds::Settings {
                match *self {
                    $( $(#[cfg($cfg)])? $name::$variant(ref c) => c.as_ref(), )*
                }
            }

            fn deserialize_kind<'de, D: serde::Deserializer<'de>>(
                kind: &str,
                fields: D,
            ) -> Result<Option<Self>, D::Error> {
                #[allow(unreachable_code)]
                Ok(Some(match kind {
                    $(
                        $(#[cfg($cfg)])?
                        $kind $(| $alias)* => $name::$variant(Box::new(
                            <$config as serde::Deserialize>::deserialize(fields)?,
                        )),
                    )*
                    _ => {
                        let _ = fields;
                        return Ok(None);
                    }
                }))
            }
        }

        impl $name {
            /// This config's `kind` (see [`Kinds`]).
            pub fn kind(&self) -> &'static str {
                $crate::kinds::Kinds::kind(self)
            }

            /// The kind's settings, as the family sees them.
            pub fn settings(&self) -> &dyn $settings {
                match *self {
                    $( $(#[cfg($cfg)])? $name::$variant(ref c) => c.as_ref(), )*
                }
            }
        }
    };
}
