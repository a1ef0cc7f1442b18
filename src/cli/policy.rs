//! `rotor policy ID`: the least privilege rotor needs to rotate a credential: at the provider
//! (from the rotator) and in the vault, each in its own policy language, ready to apply.

use super::{CliResult, Context, Exit};
use crate::config::VaultConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Credential id.
    pub id: String,
}

pub fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    let credential = ctx.credential(&config, &args.id)?;
    let vault = &config.vaults[&credential.vault];
    println!(
        "{}",
        credential
            .rotator
            .settings()
            .least_privilege(&credential.id)
    );
    print!(
        "{}",
        vault_policy(
            &credential.id,
            &credential.vault,
            vault,
            &credential.vault_path
        )
    );
    Ok(Exit::Ok)
}

/// The vault side of the policy.
pub fn vault_policy(id: &str, name: &str, vault: &VaultConfig, path: &str) -> String {
    match vault {
        VaultConfig::Openbao(c) => {
            let (mount, pending) = (
                c.mount.trim_matches('/'),
                c.pending_prefix.trim_matches('/'),
            );
            format!(
                "# rotor: least privilege for credential \"{id}\" in vault \"{name}\" (KV v2 mount \"{mount}\").\n\
                 # Apply with: bao policy write rotor-{policy} FILE\n\
                 # What consumers read: promoted versions only.\n\
                 path \"{mount}/data/{path}\" {{\n  capabilities = [\"create\", \"read\", \"update\"]\n}}\n\
                 # rotor's bookkeeping in custom_metadata.\n\
                 path \"{mount}/metadata/{path}\" {{\n  capabilities = [\"read\", \"patch\"]\n}}\n\
                 # The version being rotated in; consumers need no access here.\n\
                 path \"{mount}/data/{pending}/{path}\" {{\n  capabilities = [\"create\", \"read\", \"update\"]\n}}\n\
                 # Removing a pending version with its history.\n\
                 path \"{mount}/metadata/{pending}/{path}\" {{\n  capabilities = [\"delete\"]\n}}\n\
                 # Checking that the mount is KV version 2.\n\
                 path \"sys/internal/ui/mounts/{mount}\" {{\n  capabilities = [\"read\"]\n}}\n",
                policy = id.replace('/', "-"),
            )
        }
        VaultConfig::AwsSecretsManager(c) => {
            let policy = serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "RotorRotates",
                        "Effect": "Allow",
                        "Action": [
                            "secretsmanager:GetSecretValue",
                            "secretsmanager:PutSecretValue",
                            "secretsmanager:UpdateSecretVersionStage"
                        ],
                        "Resource": format!("arn:aws:secretsmanager:{}:*:secret:{path}-??????", c.region)
                    },
                    {
                        "Sid": "RotorCreatesOnFirstRotation",
                        "Effect": "Allow",
                        "Action": ["secretsmanager:CreateSecret"],
                        "Resource": format!("arn:aws:secretsmanager:{}:*:secret:{path}-??????", c.region)
                    }
                ]
            });
            format!(
                "// rotor: least privilege (IAM policy) for credential \"{id}\" in vault \"{name}\".\n{}\n",
                serde_json::to_string_pretty(&policy).expect("policy serializes")
            )
        }
        VaultConfig::File(c) => format!(
            "# rotor: least privilege for credential \"{id}\" in vault \"{name}\" (file vault).\n\
             # rotor's user needs read and write on the folder and its files, and read on the identity:\n\
             #   {dir}/{path}.age           what consumers read (grant them read on this file only)\n\
             #   {dir}/{path}.age.pending   a version being rotated in (no one else needs it)\n\
             # Suggested: chown -R rotor {dir}; chmod 0700 {dir}; the identity file mode 0600.\n",
            dir = c.dir.display(),
        ),
    }
}
