//! `rotor identify [--rotate] [--reason TEXT]`: reads a suspected secret from stdin (never from
//! the command line, where `ps` and shell history would keep it) and says which credential and
//! version it is, and whether it may still authenticate; `--rotate` runs the emergency rotation
//! of each credential it may still open. See `app::identify`.

use std::io::{IsTerminal, Read};

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::{CliError, CliResult, Context, Exit, actor};
use crate::app::emergency::{self, Asking};
use crate::app::identify::{self, Identified, Role};
use crate::clock::rfc3339;
use crate::engine::Runtime;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rotate, as an emergency, every credential the value may still authenticate for.
    #[arg(long)]
    pub rotate: bool,
    /// Why (with --rotate), kept in the audit log with who asked.
    #[arg(long, requires = "rotate")]
    pub reason: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let value = read_stdin()?;
    let config = ctx.load_config()?;
    let store = ctx.open_store(&config).await?;
    let clock = store.clock();
    crate::scheduler::daemon::reconcile(&store, &config, clock.as_ref()).await?;
    let runtime = Runtime::build(config).await?;
    let search = identify::identify(&store, &runtime, &value, clock.now_ms()).await?;
    drop(value);
    for unreadable in &search.unreadable {
        eprintln!("could not check (vault unreadable): {unreadable}");
    }
    if search.found.is_empty() {
        store.close().await;
        println!(
            "no credential rotor manages holds this value (current, previous, retired or a candidate)"
        );
        return Ok(Exit::RotationFailed);
    }
    for found in &search.found {
        println!("{}", describe(found));
    }
    if !args.rotate {
        if let Some(live) = search.found.iter().find(|f| f.may_authenticate()) {
            println!(
                "it may still authenticate: `rotor rotate {} --emergency --reason TEXT` (or `rotor identify --rotate`)",
                live.credential_id
            );
        }
        store.close().await;
        return Ok(Exit::Ok);
    }
    let mut ids: Vec<&str> = search
        .found
        .iter()
        .filter(|f| f.may_authenticate())
        .map(|f| f.credential_id.as_str())
        .collect();
    // One emergency per credential, however many of its values matched and in whatever order.
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        println!("nothing to rotate: the value no longer authenticates anywhere rotor knows of");
    }
    let actor = actor();
    let reason = args
        .reason
        .unwrap_or_else(|| "found exposed (rotor identify)".to_owned());
    let (stopping, ctrl_c) = super::stop_on_ctrl_c(
        "stopping after the step in flight; the emergency is NOT over: run it again",
    );
    let asking = Asking {
        actor: &actor,
        reason: &reason,
        clock,
        stopping,
    };
    let mut exit = Exit::Ok;
    for id in ids {
        let outcome = emergency::rotate(&store, &runtime, id, &asking)
            .await
            .map_err(super::rotate::cli_error)?;
        if super::emergency::report_one(id, &outcome) != Exit::Ok {
            exit = Exit::RotationFailed;
        }
    }
    ctrl_c.abort();
    store.close().await;
    Ok(exit)
}

/// The suspected secret, from stdin; one trailing newline is not part of it.
fn read_stdin() -> Result<SecretString, CliError> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("paste the suspected secret, then press Enter and Ctrl-D:");
    }
    let mut bytes = Zeroizing::new(Vec::new());
    stdin
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::usage(format_args!("cannot read the value from stdin: {e}")))?;
    let mut end = bytes.len();
    if bytes[..end].ends_with(b"\n") {
        end -= 1;
        if bytes[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    if end == 0 {
        return Err(CliError::usage(
            "no value on stdin: pipe the suspected secret in, e.g. `rotor identify < found.txt`",
        ));
    }
    let text = std::str::from_utf8(&bytes[..end])
        .map_err(|_| CliError::usage("the value on stdin is not UTF-8 text"))?;
    Ok(SecretString::from(text.to_owned()))
}

/// One line per match: credential, field, version, what it is now, and the credential's state.
fn describe(found: &Identified) -> String {
    let version = found.version.as_deref().unwrap_or("?");
    let minted = match (&found.run_id, found.minted_at) {
        (Some(run), Some(at)) => format!(", minted by run {run} at {}", rfc3339(at)),
        _ => String::new(),
    };
    let role = match &found.role {
        Role::Current => "the CURRENT version: it authenticates".to_owned(),
        Role::Previous {
            replaced_by: Some(run),
        } => format!("the PREVIOUS version: it authenticates until run {run} retires it"),
        Role::Previous { replaced_by: None } => {
            "a PREVIOUS version, not current: it may still authenticate".to_owned()
        }
        Role::Retired { by_run, at } => format!(
            "RETIRED by run {by_run}{}: it no longer authenticates",
            at.map_or(String::new(), |at| format!(" at {}", rfc3339(at)))
        ),
        Role::Candidate { state } if state.is_terminal() => {
            format!("a candidate that never became current (its run {state})")
        }
        Role::Candidate { state } => {
            format!("the candidate of a live run ({state}): it may be installed at the provider")
        }
    };
    format!(
        "{} (field `{}`, version {version}{minted}): {role}; the credential is {}",
        found.credential_id, found.field, found.state
    )
}
