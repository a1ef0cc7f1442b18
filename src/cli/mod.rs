//! The command line: one file per subcommand. This is the edge of the program, where errors
//! become messages for a person and exit codes for scripts.

mod audit;
mod confirm;
mod drill;
mod history;
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
use secrecy::SecretString;

use crate::config::{self, Config, Diagnostics};
use crate::store::{Store, StoreError};

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

/// An error that ends the command: what to print and which exit code to use.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Self {
            exit,
            error: error.into(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let exit = match e {
            StoreError::Unavailable { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::BadUrl { .. } => Exit::StoreUnavailable,
            StoreError::UnknownCredential(_) | StoreError::RunInFlight(_) => Exit::Usage,
            _ => Exit::Internal,
        };
        Failure::new(exit, e)
    }
}

impl From<Diagnostics> for Failure {
    fn from(d: Diagnostics) -> Self {
        Failure::new(Exit::ConfigInvalid, d)
    }
}

pub type CliResult = Result<Exit, Failure>;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    /// Drill rotations: prove that credentials rotate, consumers survive and alerts arrive.
    Drill(drill::Args),
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
        Err(failure) => {
            if failure.error.downcast_ref::<Diagnostics>().is_some() {
                eprintln!("{}", failure.error);
            } else {
                eprintln!("error: {}", failure.error);
                for cause in failure.error.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
                }
            }
            ExitCode::from(failure.exit as u8)
        }
    }
}

async fn dispatch(cli: Cli) -> CliResult {
    let ctx = Context {
        config_paths: cli.config,
        database: cli.database,
    };
    match cli.command {
        Command::Run(args) => run::run(&ctx, args).await,
        Command::Validate(args) => validate::run(&ctx, args).await,
        Command::Plan(args) => plan::run(&ctx, args).await,
        Command::Rotate(args) => rotate::run(&ctx, args).await,
        Command::Status(args) => status::run(&ctx, args).await,
        Command::Confirm(args) => confirm::run(&ctx, args).await,
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
}

impl Context {
    pub fn load_config(&self) -> Result<Config, Failure> {
        Ok(config::load(&self.config_paths)?)
    }

    /// The configured credential `id`, or a usage error naming where rotor looked.
    pub fn credential<'a>(
        &self,
        config: &'a Config,
        id: &str,
    ) -> Result<&'a config::Credential, Failure> {
        config.credential(id).ok_or_else(|| {
            Failure::new(
                Exit::Usage,
                anyhow::anyhow!("no credential `{id}` in {:?}", self.config_paths),
            )
        })
    }

    pub async fn open_store(&self, config: &Config) -> Result<Store, Failure> {
        let url = self
            .database
            .clone()
            .unwrap_or_else(|| config.store.url.clone());
        let password = match &config.store.password {
            Some(reference) => Some(
                resolve_plain(reference).map_err(|e| Failure::new(Exit::StoreUnavailable, e))?,
            ),
            None => None,
        };
        Ok(Store::connect(&url, password.as_ref()).await?)
    }
}

/// Resolves a store password reference (env or file: the store opens before any vault).
fn resolve_plain(reference: &config::SecretRef) -> anyhow::Result<SecretString> {
    match reference {
        config::SecretRef::Env { env } => std::env::var(env)
            .map(SecretString::from)
            .map_err(|_| anyhow::anyhow!("environment variable {env} is not set")),
        config::SecretRef::File { file } => {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(file)?);
            Ok(SecretString::from(text.trim_end()))
        }
        config::SecretRef::Vault { .. } => {
            anyhow::bail!("the store password cannot come from a vault: use env or file")
        }
    }
}

/// The actor recorded in the audit log for CLI actions.
pub fn actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::new(Exit::Internal, e))?;
    println!("{text}");
    Ok(())
}
