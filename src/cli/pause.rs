//! `rotor pause ID|--select PATTERN [--until T] --reason TEXT` and `rotor resume ID|--select
//! PATTERN`: see `app::pause`.

use super::{CliError, CliResult, Context, Exit, actor};
use crate::app::pause;
use crate::clock::rfc3339;
use crate::config::Config;
use crate::drill::select;

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// Credential id.
    #[arg(required_unless_present = "select")]
    pub id: Option<String>,
    /// Credentials whose id matches this glob, or of this provider kind or vault (repeatable).
    #[arg(long, conflicts_with = "id")]
    pub select: Vec<String>,
    /// When the pause ends by itself: a duration from now ("4h", "2d") or an RFC 3339 time.
    /// Without it, the pause lasts until `rotor resume`.
    #[arg(long)]
    pub until: Option<String>,
    /// Why (a provider's maintenance, a migration), shown by `rotor status` and kept in the
    /// audit log with who paused.
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Credential id.
    #[arg(required_unless_present = "select")]
    pub id: Option<String>,
    /// Credentials whose id matches this glob, or of this provider kind or vault (repeatable).
    #[arg(long, conflicts_with = "id")]
    pub select: Vec<String>,
}

pub async fn pause(ctx: &Context, args: PauseArgs) -> CliResult {
    let config = ctx.load_config()?;
    let ids = chosen(ctx, &config, args.id.as_deref(), &args.select)?;
    let store = ctx.open_store(&config).await?;
    let clock = store.clock();
    let until = args
        .until
        .as_deref()
        .map(|text| until(text, clock.now_ms()))
        .transpose()?;
    let paused = pause::pause(
        &store,
        &config,
        clock.as_ref(),
        &ids,
        until,
        &actor(),
        &args.reason,
    )
    .await?;
    store.close().await;
    let ends = until.map_or("until `rotor resume`".to_owned(), |at| {
        format!("until {}", rfc3339(at))
    });
    for p in paused {
        let run = p.run.map_or(String::new(), |(run, state)| {
            format!("; its live run {run} ({state}) waits after the step in flight")
        });
        println!("paused {} {ends}{run}", p.id);
    }
    Ok(Exit::Ok)
}

pub async fn resume(ctx: &Context, args: ResumeArgs) -> CliResult {
    let config = ctx.load_config()?;
    let ids = chosen(ctx, &config, args.id.as_deref(), &args.select)?;
    let store = ctx.open_store(&config).await?;
    let resumed = pause::resume(&store, store.clock().as_ref(), &ids, &actor()).await?;
    store.close().await;
    for id in &ids {
        if resumed.contains(id) {
            println!("resumed {id}: it is scheduled again and its live run, if any, goes on");
        } else {
            println!("{id} was not paused");
        }
    }
    Ok(Exit::Ok)
}

/// The credentials named on the command line.
fn chosen(
    ctx: &Context,
    config: &Config,
    id: Option<&str>,
    patterns: &[String],
) -> Result<Vec<String>, CliError> {
    if let Some(id) = id {
        return Ok(vec![ctx.credential(config, id)?.id.clone()]);
    }
    let (automatic, by_hand) = select(config, patterns);
    let ids: Vec<String> = automatic
        .iter()
        .chain(&by_hand)
        .map(|c| c.id.clone())
        .collect();
    if ids.is_empty() {
        return Err(CliError::usage(format_args!(
            "no credential matches {patterns:?} (an id glob, a provider kind or a vault name)"
        )));
    }
    Ok(ids)
}

/// `--until`: a duration from `now`, or an RFC 3339 time; in the future either way.
fn until(text: &str, now: i64) -> Result<i64, CliError> {
    let at = match text.parse::<crate::config::Duration>() {
        Ok(d) => now + d.as_secs() as i64 * 1000,
        Err(_) => chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|_| {
                CliError::usage(format_args!(
                    "--until {text:?}: expected a duration (\"4h\", \"2d\") or an RFC 3339 time (\"2026-12-24T08:00:00Z\")"
                ))
            })?
            .timestamp_millis(),
    };
    if at <= now {
        return Err(CliError::usage(format_args!(
            "--until {text:?} is not in the future"
        )));
    }
    Ok(at)
}
