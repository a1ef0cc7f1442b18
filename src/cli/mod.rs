//! The command line: one file per subcommand. This is the edge of the program, where errors
//! become messages for a person and exit codes for scripts.

mod audit;
mod cancel;
mod confirm;
mod drill;
mod emergency;
mod history;
mod identify;
mod pause;
mod plan;
mod policy;
mod rotate;
mod run;
mod schema;
mod status;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, Diagnostics};
use crate::engine::EngineError;
use crate::store::{Store, StoreError};
use crate::telemetry::LogFormat;

/// Exit codes, a stable interface for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Internal = 1,
    Usage = 2,
    ConfigInvalid = 3,
    RotationFailed = 4,
    StoreUnavailable = 5,
}

/// What ends a command early. Its exit code is chosen in one place, `CliError::exit`, whose
/// `match` is the README's table of exit codes.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line asks for what cannot be: an unknown credential, a bad time, an
    /// address already in use, a credential of the other kind.
    #[error(transparent)]
    Usage(anyhow::Error),
    #[error(transparent)]
    Config(#[from] Diagnostics),
    /// The config reads well but does not work: a provider refused `validate --online`.
    #[error(transparent)]
    Invalid(anyhow::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store's password: {0}")]
    StorePassword(crate::vault::SecretRefError),
    #[error("the store's integrity key ([store] key): {0}")]
    StoreKey(crate::vault::SecretRefError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The command did its work and found it failed (the audit chain is broken).
    #[error(transparent)]
    Failed(anyhow::Error),
    /// rotor's own fault or the machine's (a report that cannot be written).
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl CliError {
    pub fn usage(message: impl std::fmt::Display) -> Self {
        CliError::Usage(anyhow::anyhow!("{message}"))
    }

    pub fn exit(&self) -> Exit {
        match self {
            CliError::Usage(_) => Exit::Usage,
            CliError::Config(_) | CliError::Invalid(_) => Exit::ConfigInvalid,
            CliError::Store(e) | CliError::Engine(EngineError::Store(e)) => store_exit(e),
            CliError::StorePassword(_) => Exit::StoreUnavailable,
            // Like a vault's identity: a file the config names, or the config, to fix.
            CliError::StoreKey(_) => Exit::ConfigInvalid,
            // A file the config names (a vault's key, a CA bundle) is unusable, or a rotator
            // cannot be built from what the config says: fix the config or that file.
            CliError::Engine(
                EngineError::OpenVaults(_)
                | EngineError::NoVault { .. }
                | EngineError::Rotator { .. }
                | EngineError::NotConfigured(_),
            ) => Exit::ConfigInvalid,
            CliError::Engine(EngineError::Crashed(_) | EngineError::Panicked { .. }) => {
                Exit::RotationFailed
            }
            CliError::Failed(_) => Exit::RotationFailed,
            CliError::Internal(_) => Exit::Internal,
        }
    }
}

fn store_exit(e: &StoreError) -> Exit {
    match e {
        StoreError::Unavailable { .. }
        | StoreError::Damaged { .. }
        | StoreError::SchemaTooNew { .. }
        | StoreError::BadUrl { .. }
        | StoreError::Migrate { .. }
        | StoreError::WriterGone => Exit::StoreUnavailable,
        StoreError::Query(_) | StoreError::Read(_) | StoreError::Write(_) if e.is_outage() => {
            Exit::StoreUnavailable
        }
        StoreError::Query(_) | StoreError::Read(_) | StoreError::Write(_) => Exit::Internal,
        // Another worker took the run over: it goes on there, not here.
        StoreError::LeaseLost { .. } => Exit::RotationFailed,
        StoreError::UnknownCredential(_) | StoreError::RunInFlight(_) => Exit::Usage,
        StoreError::Key { .. } => Exit::ConfigInvalid,
    }
}

pub type CliResult = Result<Exit, CliError>;

#[derive(Debug, Parser)]
#[command(
    name = "rotor",
    version,
    about = "Credential rotation scheduler and dual-credential rollover worker"
)]
pub struct Cli {
    /// Config files or folders of *.toml files (repeatable).
    #[arg(
        long = "config",
        short = 'c',
        global = true,
        default_value = "schedules",
        env = "ROTOR_CONFIG"
    )]
    pub config: Vec<PathBuf>,
    /// Store URL; overrides [store] url.
    #[arg(long, global = true, env = "ROTOR_DATABASE_URL")]
    pub database: Option<String>,
    /// Start a new store in an existing empty (0-byte) store file. Without it such a file is
    /// refused (exit 5), as a store that lost its contents would be.
    #[arg(long, global = true)]
    pub init: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax); RUST_LOG also works.
    #[arg(long, global = true, env = "ROTOR_LOG", default_value = "info")]
    pub log: String,
    /// Send traces (a trace per run, a span per step) over OTLP/HTTP to this collector, e.g.
    /// http://otel-collector:4318. OTEL_EXPORTER_OTLP_ENDPOINT works too.
    #[arg(long, global = true, env = "ROTOR_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the scheduler: rotate every credential when it is due.
    Run(run::Args),
    /// Check config files and print every problem as path:line:col.
    Validate(validate::Args),
    /// Show when each credential rotates next, and why.
    Plan(plan::Args),
    /// Rotate one credential now.
    Rotate(rotate::Args),
    /// Stop a credential's live run without losing a working credential.
    Cancel(cancel::Args),
    /// Drill rotations: prove that credentials rotate, consumers survive and alerts arrive.
    Drill(drill::Args),
    /// Which credential is this? Reads a suspected secret from stdin and names the credential
    /// and version it is (current, previous, retired); --rotate rotates it as an emergency.
    Identify(identify::Args),
    /// Stop scheduling credentials (a provider's maintenance, a migration); live runs wait
    /// after the step in flight. An emergency rotation still goes through.
    Pause(pause::PauseArgs),
    /// End a pause: the credentials are scheduled again and their live runs go on.
    Resume(pause::ResumeArgs),
    /// Record that a credential rotated by hand (`manual` rotator) was rotated.
    Confirm(confirm::Args),
    /// Show each credential's state, version, age and last error.
    Status(status::Args),
    /// Show past runs and their steps, newest first.
    History(history::Args),
    /// Check the audit log.
    Audit(audit::Args),
    /// Print the least privilege the credential's vault needs, as a policy to apply.
    Policy(policy::Args),
    /// Print the JSON Schema of config files.
    Schema,
}

/// Parses arguments, runs the command and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Usage as u8 } else { 0 });
        }
    };
    let telemetry = crate::telemetry::init(cli.log_format, &cli.log, cli.otlp_endpoint.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Internal as u8);
        }
    };
    let outcome = runtime.block_on(dispatch(cli));
    // Buffered spans go out before the runtime and the process end.
    drop(telemetry);
    match outcome {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(CliError::Config(diagnostics)) => {
            eprintln!("{diagnostics}");
            ExitCode::from(Exit::ConfigInvalid as u8)
        }
        Err(error) => {
            eprintln!("error: {error}");
            let mut cause = std::error::Error::source(&error);
            while let Some(e) = cause {
                eprintln!("  caused by: {e}");
                cause = e.source();
            }
            ExitCode::from(error.exit() as u8)
        }
    }
}

async fn dispatch(cli: Cli) -> CliResult {
    let ctx = Context {
        config_paths: cli.config,
        database: cli.database,
        init: cli.init,
    };
    match cli.command {
        Command::Run(args) => run::run(&ctx, args).await,
        Command::Validate(args) => validate::run(&ctx, args).await,
        Command::Plan(args) => plan::run(&ctx, args).await,
        Command::Rotate(args) => rotate::run(&ctx, args).await,
        Command::Cancel(args) => cancel::run(&ctx, args).await,
        Command::Status(args) => status::run(&ctx, args).await,
        Command::Confirm(args) => confirm::run(&ctx, args).await,
        Command::Identify(args) => identify::run(&ctx, args).await,
        Command::Pause(args) => pause::pause(&ctx, args).await,
        Command::Resume(args) => pause::resume(&ctx, args).await,
        Command::Drill(args) => drill::run(&ctx, args).await,
        Command::History(args) => history::run(&ctx, args).await,
        Command::Audit(args) => audit::run(&ctx, args).await,
        Command::Policy(args) => policy::run(&ctx, args),
        Command::Schema => schema::run(),
    }
}

/// What every subcommand shares: where config and store are.
pub struct Context {
    pub config_paths: Vec<PathBuf>,
    pub database: Option<String>,
    /// `--init`: an existing empty store file may become a new store.
    pub init: bool,
}

impl Context {
    pub fn load_config(&self) -> Result<Config, CliError> {
        Ok(config::load(&self.config_paths)?)
    }

    /// The configured credential `id`, or a usage error naming where rotor looked.
    pub fn credential<'a>(
        &self,
        config: &'a Config,
        id: &str,
    ) -> Result<&'a config::Credential, CliError> {
        config.credential(id).ok_or_else(|| {
            CliError::usage(format_args!(
                "no credential `{id}` in {:?}",
                self.config_paths
            ))
        })
    }

    pub async fn open_store(&self, config: &Config) -> Result<Store, CliError> {
        // As in the config: a password in the URL would show in `ps`, in the environment of
        // every child and in error messages.
        if let Some(url) = &self.database
            && rotor_rotators::secret_ref::url_has_password(url)
        {
            return Err(CliError::usage(
                "--database (or ROTOR_DATABASE_URL) holds a password, which `ps` and the process environment show: \
                 remove it and give it as a reference, `[store] password = { env = \"NAME\" }` or `{ file = \"/path\" }`",
            ));
        }
        if let Some(url) = &self.database
            && let Some(problem) = rotor_rotators::net::transport_problem(url)
            && !config.store.insecure_transport
        {
            return Err(CliError::usage(format_args!(
                "--database (or ROTOR_DATABASE_URL): {problem}; or write `insecure_transport = true` in [store] if the network to it is trusted"
            )));
        }
        let url = self
            .database
            .clone()
            .unwrap_or_else(|| config.store.url.clone());
        let password = match &config.store.password {
            Some(reference) => {
                Some(crate::vault::resolve_local(reference).map_err(CliError::StorePassword)?)
            }
            None => None,
        };
        let key = match &config.store.key {
            Some(reference) => {
                let secret = crate::vault::resolve_local(reference).map_err(CliError::StoreKey)?;
                Some(
                    crate::store::integrity::IntegrityKey::from_secret(&secret).map_err(
                        |message| CliError::usage(format_args!("[store] key: {message}")),
                    )?,
                )
            }
            None => None,
        };
        Ok(Store::open(&url, password.as_ref(), key, self.init).await?)
    }
}

/// The actor recorded in the audit log for CLI actions: the login name the environment claims
/// (`SUDO_USER` under sudo, else `USER`), which anyone can set, and beside it the process's real
/// user id, which the kernel vouches for. An audit reader trusts the uid.
pub fn actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user} (uid {})", rustix::process::getuid().as_raw())
}

/// Ctrl-C sets the returned flag (after printing `says`), so that the command stops after the
/// step in flight and leaves its runs resumable. Abort the handle when the command is done.
pub fn stop_on_ctrl_c(
    says: &'static str,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<()>,
) {
    let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stopping.clone();
    let handle = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("{says}");
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (stopping, handle)
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Internal(e.into()))?;
    println!("{text}");
    Ok(())
}

/// Prints `items` as one pretty JSON array on stdout, an item at a time: the same text as
/// `print_json` of them all, without holding them.
pub fn print_json_each<T: serde::Serialize>(
    items: impl IntoIterator<Item = T>,
) -> Result<(), CliError> {
    use serde::ser::{SerializeSeq, Serializer};
    use std::io::Write;
    let internal = |e: serde_json::Error| CliError::Internal(e.into());
    let mut json = serde_json::Serializer::pretty(std::io::BufWriter::new(std::io::stdout()));
    let mut array = (&mut json).serialize_seq(None).map_err(internal)?;
    for item in items {
        array.serialize_element(&item).map_err(internal)?;
    }
    array.end().map_err(internal)?;
    let mut out = json.into_inner();
    writeln!(out)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Internal(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost() -> StoreError {
        StoreError::Query(sqlx::Error::PoolTimedOut)
    }

    #[test]
    fn a_store_lost_mid_command_exits_5_whoever_saw_it() {
        // The daemon loop and `rotate`'s drive see it through the engine.
        assert_eq!(
            CliError::from(EngineError::Store(lost())).exit(),
            Exit::StoreUnavailable
        );
        assert_eq!(CliError::from(lost()).exit(), Exit::StoreUnavailable);
        assert_eq!(
            CliError::from(StoreError::WriterGone).exit(),
            Exit::StoreUnavailable
        );
        let unreadable = crate::vault::SecretRefError::EnvMissing("ROTOR_DB_PASSWORD".into());
        assert_eq!(
            CliError::StorePassword(unreadable).exit(),
            Exit::StoreUnavailable
        );
    }

    #[test]
    fn what_a_person_must_fix_is_told_apart_from_rotor_s_own_faults() {
        assert_eq!(
            CliError::from(StoreError::Query(sqlx::Error::RowNotFound)).exit(),
            Exit::Internal
        );
        assert_eq!(
            CliError::from(StoreError::RunInFlight("app/key".into())).exit(),
            Exit::Usage
        );
        assert_eq!(
            CliError::from(EngineError::NotConfigured("app/key".into())).exit(),
            Exit::ConfigInvalid
        );
        assert_eq!(
            CliError::Failed(anyhow::anyhow!("audit log broken")).exit(),
            Exit::RotationFailed
        );
    }
}
