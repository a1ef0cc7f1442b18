//! References to secrets in config. The type lives in `rotor-rotators` because rotator
//! sections (an admin password, an App private key) hold references too.

pub use rotor_rotators::SecretRef;
