//! `ssh_authorized_key`: an Ed25519 key pair that logs in as `user` on each of `hosts`.
//!
//! rotor makes the key pair, stores it in the vault, and over SSH (logged in as `user` with the
//! configured admin key) appends the new public key's line to `user`'s `authorized_keys` on
//! every host; it verifies by logging in with the new key on every host and running
//! `verify_command`; retirement removes exactly the old key's line: the whole line rotor wrote,
//! whose comment carries the run token that made it, never a line by its position. The old and
//! the new key both log in through grace.
//!
//! Every host key is checked against `known_hosts` (OpenSSH's format, hashed names included):
//! an unknown or changed host key refuses the connection; nothing is learnt on first use.
//! Commands are `sh` scripts whose every value is quoted with `shlex`; the lines rotor writes
//! hold only the key type, base64 and a `rotor:<run token>` comment.
//!
//! One credential per account's file: every `rotor:` line in it is counted as this credential's
//! when rotor lists what is live, so two credentials sharing a file would see each other's keys.

use crate::kinds::Settings;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::ChannelMsg;
use russh::client::{AuthResult, Handle, Handler};
use russh::keys::PrivateKeyWithHashAlg;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::sshkey::{ed25519_openssh, fingerprint, public_half};
use crate::{
    Credential, LiveCredential, MintContext, Origin, Retired, Rotator, RotatorError,
    RotatorSettings, SecretRef, Secrets, resolve_secret,
};

/// The vault document's fields: the private key in OpenSSH format and its public line.
pub const PRIVATE_KEY: &str = "private_key";
pub const PUBLIC_KEY: &str = "public_key";

/// The comment of every line rotor writes: `rotor:<run token>` (the run that minted the key).
const TAG: &str = "rotor:";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// The hosts whose `authorized_keys` hold the key: `host` or `host:port` (port 22 when
    /// omitted).
    pub hosts: Vec<String>,
    /// The account the key logs in as, on every host.
    pub user: String,
    /// The private key rotor logs in as `user` with to edit `authorized_keys` (OpenSSH format,
    /// a secret reference). It stays: give it `from="<rotor's address>"` in `authorized_keys`.
    pub admin_key: SecretRef,
    /// OpenSSH `known_hosts` holding every host's key (`ssh-keyscan` output checked by hand):
    /// a host not in it, or with another key, is refused.
    pub known_hosts: PathBuf,
    /// Run as the new key on every host; its exit status 0 is what verify proves. Default
    /// `true`: the login itself.
    #[serde(default = "default_verify_command")]
    pub verify_command: String,
    /// The file, relative to `user`'s home unless absolute. Default `.ssh/authorized_keys`.
    #[serde(default = "default_authorized_keys")]
    pub authorized_keys: String,
    /// How long connecting and each command may take before the step counts as transient.
    #[serde(default = "default_timeout")]
    pub timeout: crate::duration::Duration,
}

fn default_verify_command() -> String {
    "true".into()
}

fn default_authorized_keys() -> String {
    ".ssh/authorized_keys".into()
}

fn default_timeout() -> crate::duration::Duration {
    crate::duration::Duration::from_secs(15)
}

/// `host[:port]` as (host, port).
fn split_host(entry: &str) -> Option<(String, u16)> {
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()?),
        _ => (entry, 22),
    };
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
    plain.then(|| (host.to_owned(), port))
}

impl Settings for SshConfig {
    fn validate(&self) -> Result<(), String> {
        if self.hosts.is_empty() {
            return Err("`hosts` is empty: name at least one host".into());
        }
        if let Some(bad) = self.hosts.iter().find(|h| split_host(h).is_none()) {
            return Err(format!(
                "host {bad:?} in `hosts`: write a host name or address, optionally with `:port`"
            ));
        }
        let user_ok = !self.user.is_empty()
            && self
                .user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !user_ok {
            return Err(format!("`user` {:?} is not an account name", self.user));
        }
        if self.authorized_keys.is_empty() || self.authorized_keys.contains('\n') {
            return Err("`authorized_keys` must be a path".into());
        }
        if self.verify_command.trim().is_empty() {
            return Err("`verify_command` is empty: leave it out to run `true`".into());
        }
        Ok(())
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        vec![&self.admin_key]
    }
}

impl RotatorSettings for SshConfig {
    fn verification(&self) -> crate::Verification {
        crate::Verification {
            proves: "a login as `user` with the new key on every host (its host key checked against `known_hosts`), and `verify_command` exits 0 there",
            cannot: "that the hosts consumers reach are the ones listed, or what `from=` and sshd's rules allow from elsewhere",
        }
    }

    fn least_privilege(&self, credential_id: &str) -> String {
        let mut text = format!(
            "# rotor: least privilege on the hosts for credential \"{credential_id}\".\n\
             # rotor logs in as {user} with its admin key and edits only {file}.\n\
             # Put the admin key's public line in that file on each host, limited to rotor's address:\n\
             #   from=\"ROTOR_ADDRESS\",no-agent-forwarding,no-port-forwarding,no-pty,no-X11-forwarding ssh-ed25519 AAAA... rotor-admin\n\
             # and each host's key in {known_hosts}, checked by hand:\n",
            user = self.user,
            file = self.authorized_keys,
            known_hosts = self.known_hosts.display(),
        );
        for host in &self.hosts {
            let (name, port) = split_host(host).unwrap_or((host.clone(), 22));
            text.push_str(&format!(
                "#   ssh-keyscan -p {port} -t ed25519 {name} >> {}\n",
                self.known_hosts.display()
            ));
        }
        text
    }
}

pub struct SshAuthorizedKey {
    config: SshConfig,
    secrets: Secrets,
    hosts: Vec<(String, u16)>,
}

/// Checks the server's key against `known_hosts`, and remembers why it refused one.
struct KnownHosts {
    host: String,
    port: u16,
    file: PathBuf,
    refused: Arc<Mutex<Option<String>>>,
}

impl Handler for KnownHosts {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            *self.refused.lock().expect("refusal lock") = Some(
                "it offered a host certificate, which rotor does not check: give it a plain host key in known_hosts"
                    .into(),
            );
            return Ok(false);
        };
        let why = match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.file)
        {
            Ok(true) => return Ok(true),
            Ok(false) => format!(
                "its host key ({}) is not in {}: check it by hand and add it (`rotor policy ID` shows how); rotor never trusts a key on first use",
                key.fingerprint(russh::keys::HashAlg::Sha256),
                self.file.display()
            ),
            Err(russh::keys::Error::KeyChanged { line }) => format!(
                "its host key ({}) differs from line {line} of {}: something else may be answering in its place; if the host was rebuilt, check its new key by hand and replace the line",
                key.fingerprint(russh::keys::HashAlg::Sha256),
                self.file.display()
            ),
            Err(e) => format!("{} cannot be read: {e}", self.file.display()),
        };
        *self.refused.lock().expect("refusal lock") = Some(why);
        Ok(false)
    }
}

/// A command's outcome on one host.
struct Ran {
    status: Option<u32>,
    stdout: Zeroizing<Vec<u8>>,
    stderr: String,
}

/// The whole `authorized_keys` line rotor writes for `credential`'s public key.
fn line_of(credential: &Credential) -> Result<String, RotatorError> {
    let line = credential
        .require(PUBLIC_KEY)?
        .expose_secret()
        .trim()
        .to_owned();
    let parts: Vec<&str> = line.split(' ').collect();
    let plain = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=-_.:@".contains(c))
    };
    match parts.as_slice() {
        [kind, body, comment]
            if plain(kind) && plain(body) && plain(comment) && comment.starts_with(TAG) =>
        {
            Ok(line)
        }
        _ => Err(RotatorError::permanent(
            "the stored public key is not a line rotor wrote (`ssh-ed25519 AAAA... rotor:...`)",
        )),
    }
}

fn quote(value: &str) -> String {
    shlex::try_quote(value)
        .expect("values rotor quotes hold no NUL")
        .into_owned()
}

impl SshAuthorizedKey {
    pub fn build(config: SshConfig, secrets: Secrets) -> Result<Self, RotatorError> {
        config.validate().map_err(RotatorError::permanent)?;
        let hosts = config
            .hosts
            .iter()
            .map(|h| split_host(h).expect("validated"))
            .collect();
        Ok(Self {
            config,
            secrets,
            hosts,
        })
    }

    fn timeout(&self) -> Duration {
        self.config.timeout.as_std()
    }

    /// The `authorized_keys` path as `sh` reads it: quoted, under `$HOME` unless absolute.
    fn file(&self) -> String {
        let path = &self.config.authorized_keys;
        if path.starts_with('/') {
            quote(path)
        } else {
            format!("\"$HOME\"/{}", quote(path))
        }
    }

    /// Logs in to `host` as `user` with `key` (OpenSSH private key text).
    async fn login(
        &self,
        (host, port): &(String, u16),
        key: &SecretString,
        who: &str,
    ) -> Result<Handle<KnownHosts>, RotatorError> {
        let what = format!(
            "logging in to {host}:{port} as {} with {who}",
            self.config.user
        );
        let key = russh::keys::decode_secret_key(key.expose_secret(), None).map_err(|_| {
            RotatorError::permanent(format!("{what}: the key is not an OpenSSH private key"))
        })?;
        let refused = Arc::new(Mutex::new(None));
        let handler = KnownHosts {
            host: host.clone(),
            port: *port,
            file: self.config.known_hosts.clone(),
            refused: refused.clone(),
        };
        let config = Arc::new(russh::client::Config {
            inactivity_timeout: Some(self.timeout()),
            ..Default::default()
        });
        let connected = tokio::time::timeout(
            self.timeout(),
            russh::client::connect(config, (host.as_str(), *port), handler),
        )
        .await;
        let mut handle = match connected {
            Err(_) => {
                return Err(RotatorError::transient(format!(
                    "{what}: no answer within {}; rotor retries",
                    self.config.timeout
                )));
            }
            Ok(Err(e)) => {
                if let Some(why) = refused.lock().expect("refusal lock").take() {
                    // Not an outage: retried like one, since a host put back (or a fixed
                    // known_hosts after a reload) should heal, but the message says which.
                    return Err(RotatorError::transient(format!(
                        "{what}: refused the server: {why}; rotor retries"
                    )));
                }
                return Err(RotatorError::transient(format!(
                    "{what}: {e} (the host is unreachable; rotor retries)"
                )));
            }
            Ok(Ok(handle)) => handle,
        };
        let auth = tokio::time::timeout(
            self.timeout(),
            handle.authenticate_publickey(
                &self.config.user,
                PrivateKeyWithHashAlg::new(Arc::new(key), None),
            ),
        )
        .await
        .map_err(|_| {
            RotatorError::transient(format!(
                "{what}: no answer to the login within {}; rotor retries",
                self.config.timeout
            ))
        })?
        .map_err(|e| RotatorError::transient(format!("{what}: {e}; rotor retries")))?;
        match auth {
            AuthResult::Success => Ok(handle),
            AuthResult::Failure { .. } => Err(RotatorError::permanent(format!(
                "{what}: the host refused the key: check that its public line is in {} of {} there",
                self.config.authorized_keys, self.config.user
            ))),
        }
    }

    async fn admin(&self, host: &(String, u16)) -> Result<Handle<KnownHosts>, RotatorError> {
        let key =
            resolve_secret(&self.secrets, &self.config.admin_key, "the SSH admin key").await?;
        self.login(host, &key, "rotor's admin key").await
    }

    /// Runs `command` through `sh -c` on a logged-in host.
    async fn run(
        &self,
        handle: &Handle<KnownHosts>,
        (host, port): &(String, u16),
        command: &str,
        what: &str,
    ) -> Result<Ran, RotatorError> {
        let what = format!("{what} on {host}:{port}");
        let ran = async {
            let mut channel = handle.channel_open_session().await?;
            channel.exec(true, command.as_bytes()).await?;
            let mut ran = Ran {
                status: None,
                stdout: Zeroizing::new(Vec::new()),
                stderr: String::new(),
            };
            while let Some(message) = channel.wait().await {
                match message {
                    ChannelMsg::Data { data } => ran.stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, .. } => {
                        ran.stderr.push_str(&String::from_utf8_lossy(&data))
                    }
                    ChannelMsg::ExitStatus { exit_status } => ran.status = Some(exit_status),
                    _ => {}
                }
            }
            Ok::<_, russh::Error>(ran)
        };
        match tokio::time::timeout(self.timeout(), ran).await {
            Err(_) => Err(RotatorError::transient(format!(
                "{what}: no answer within {}; rotor retries",
                self.config.timeout
            ))),
            Ok(Err(e)) => Err(RotatorError::transient(format!(
                "{what}: {e}; rotor retries"
            ))),
            Ok(Ok(ran)) => Ok(ran),
        }
    }

    /// Runs an editing script as the admin on every host; it must exit 0.
    async fn edit_everywhere(&self, script: &str, what: &str) -> Result<(), RotatorError> {
        self.run_everywhere(None, script, what).await
    }

    /// Runs `command` on every host, logged in with `key` (named `who` in messages), or as
    /// rotor's admin without one; it must exit 0 on each.
    async fn run_everywhere(
        &self,
        key: Option<(&SecretString, &str)>,
        command: &str,
        what: &str,
    ) -> Result<(), RotatorError> {
        for host in &self.hosts {
            let handle = match key {
                Some((key, who)) => self.login(host, key, who).await?,
                None => self.admin(host).await?,
            };
            let ran = self.run(&handle, host, command, what).await?;
            if ran.status != Some(0) {
                return Err(RotatorError::permanent(format!(
                    "{what} on {}:{}: exited {:?}: {}",
                    host.0,
                    host.1,
                    ran.status,
                    ran.stderr.trim()
                )));
            }
            handle
                .disconnect(russh::Disconnect::ByApplication, "", "")
                .await
                .ok();
        }
        Ok(())
    }

    /// Removes exactly `credential`'s line from every host's file (absent is success).
    async fn remove(&self, credential: &Credential, what: &str) -> Result<(), RotatorError> {
        let line = line_of(credential)?;
        // The other lines are written to a file beside it, then renamed over it: a connection
        // lost midway leaves the old file whole, never a truncated one that locks everyone out.
        // A link is followed to the file it names, so the link stays.
        let script = format!(
            "set -e; f={file}; [ -f \"$f\" ] || exit 0; grep -qxF -- {line} \"$f\" || exit 0; \
             f=\"$(readlink -f \"$f\")\"; t=\"$f.rotor.$$\"; umask 077; \
             grep -vxF -- {line} \"$f\" > \"$t\" || true; mv -f \"$t\" \"$f\"",
            file = self.file(),
            line = quote(&line),
        );
        self.edit_everywhere(&script, what).await
    }
}

impl Rotator for SshAuthorizedKey {
    fn kind(&self) -> &'static str {
        "ssh_authorized_key"
    }

    fn origin(&self) -> Origin {
        Origin::Local
    }

    async fn mint(&self, context: MintContext<'_>) -> Result<Credential, RotatorError> {
        let (private, public) = ed25519_openssh(&format!("{TAG}{}", context.token));
        Ok(Credential::new()
            .with(PRIVATE_KEY, SecretString::from(private.to_string()))
            .with(PUBLIC_KEY, SecretString::from(public)))
    }

    async fn apply(
        &self,
        candidate: &Credential,
        _current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        let line = line_of(candidate)?;
        // Appended once, whatever happened before: the line is looked for first. Appending
        // (`>>`) keeps the file's owner, mode and any link sshd follows; a last line without
        // its line end gets one first, so the new key is never glued onto it.
        let script = format!(
            "set -e; umask 077; f={file}; mkdir -p \"$(dirname \"$f\")\"; touch \"$f\"; \
             grep -qxF -- {line} \"$f\" && exit 0; \
             if [ -s \"$f\" ] && [ -n \"$(tail -c 1 \"$f\")\" ]; then echo >> \"$f\"; fi; \
             printf '%s\\n' {line} >> \"$f\"",
            file = self.file(),
            line = quote(&line),
        );
        self.edit_everywhere(&script, "adding the new key").await
    }

    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        let key = candidate.require(PRIVATE_KEY)?;
        let line = line_of(candidate)?;
        let body = |line: &str| line.split(' ').take(2).collect::<Vec<_>>().join(" ");
        if body(&public_half(key)?) != body(&line) {
            return Err(RotatorError::permanent(
                "the stored private key is not the half of the stored public key",
            ));
        }
        self.run_everywhere(
            Some((key, "the new key")),
            &self.config.verify_command,
            "verify_command as the new key",
        )
        .await
    }

    async fn retire(
        &self,
        old: &Credential,
        current: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        if current.is_some_and(|c| line_of(c).ok() == line_of(old).ok()) {
            return Err(RotatorError::permanent(
                "refusing to retire the key consumers use now",
            ));
        }
        self.remove(old, "removing the old key").await?;
        Ok(Retired::Done)
    }

    async fn rollback(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        if current.is_some_and(|c| line_of(c).ok() == line_of(candidate).ok()) {
            return Ok(());
        }
        self.remove(candidate, "removing the rolled-back key").await
    }

    /// rotor's lines (tagged `rotor:`) in the file of every host, by fingerprint.
    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        let mut live: Vec<LiveCredential> = Vec::new();
        for host in &self.hosts {
            let handle = self.admin(host).await?;
            let ran = self
                .run(
                    &handle,
                    host,
                    &format!("f={}; [ -f \"$f\" ] && cat \"$f\" || true", self.file()),
                    "reading authorized_keys",
                )
                .await?;
            let text = String::from_utf8_lossy(&ran.stdout).into_owned();
            for line in text.lines() {
                if line.split(' ').nth(2).is_some_and(|c| c.starts_with(TAG))
                    && let Some(print) = fingerprint(line)
                    && !live.iter().any(|l| l.provider_id == print)
                {
                    live.push(LiveCredential {
                        provider_id: print,
                        active: true,
                    });
                }
            }
            handle
                .disconnect(russh::Disconnect::ByApplication, "", "")
                .await
                .ok();
        }
        Ok(live)
    }

    fn provider_id(&self, credential: &Credential) -> Option<String> {
        fingerprint(credential.get(PUBLIC_KEY)?.expose_secret())
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        let script = format!(
            "f={}; d=\"$(dirname \"$f\")\"; if [ -e \"$f\" ]; then [ -w \"$f\" ]; else [ -w \"$d\" ] || [ ! -e \"$d\" ]; fi",
            self.file()
        );
        for host in &self.hosts {
            let handle = self.admin(host).await?;
            let ran = self
                .run(&handle, host, &script, "checking authorized_keys")
                .await?;
            if ran.status != Some(0) {
                return Err(RotatorError::permanent(format!(
                    "{}:{}: {} of {} cannot be written by rotor's login",
                    host.0, host.1, self.config.authorized_keys, self.config.user
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> SshConfig {
        toml::from_str(&format!(
            "user = \"deploy\"\nadmin_key = {{ env = \"K\" }}\nknown_hosts = \"/etc/rotor/known_hosts\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn hosts_and_users_are_checked() {
        assert!(
            parse("hosts = [\"web1.internal\", \"10.0.0.5:2222\"]")
                .validate()
                .is_ok()
        );
        for (extra, expected) in [
            ("hosts = []", "`hosts` is empty"),
            ("hosts = [\"web1;rm -rf /\"]", "write a host name"),
            ("hosts = [\"web1:notaport\"]", "write a host name"),
        ] {
            let e = parse(extra).validate().unwrap_err();
            assert!(e.contains(expected), "{extra}: {e}");
        }
        let mut bad_user = parse("hosts = [\"a\"]");
        bad_user.user = "deploy; id".into();
        assert!(
            bad_user
                .validate()
                .unwrap_err()
                .contains("not an account name")
        );
        assert_eq!(split_host("h:2222"), Some(("h".into(), 2222)));
        assert_eq!(split_host("h"), Some(("h".into(), 22)));
    }

    #[test]
    fn only_lines_rotor_wrote_are_edited_and_every_value_is_quoted() {
        let (_, public) = ed25519_openssh("rotor:run_01abc");
        let c = Credential::new().with(PUBLIC_KEY, SecretString::from(public.clone()));
        assert_eq!(line_of(&c).unwrap(), public);
        let foreign = Credential::new().with(
            PUBLIC_KEY,
            SecretString::from("ssh-ed25519 AAAA' ; rm -rf ~ ; 'x rotor:x"),
        );
        assert!(line_of(&foreign).is_err());
        for value in [
            "a b'c",
            "$(touch /tmp/x)",
            "`id`",
            "x\"; rm -rf ~; \"",
            "back\\slash",
        ] {
            assert_eq!(
                shlex::split(&quote(value)),
                Some(vec![value.to_owned()]),
                "{value}"
            );
        }
        // What sh itself reads back.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote("$(id) `id` 'q' \"d\"")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "$(id) `id` 'q' \"d\"");
    }
}
