//! Reading config files into a validated [`Config`], collecting every problem with its position.
//!
//! Each file is parsed once into a tree that remembers byte spans; each table is then
//! deserialized on its own so that one bad credential does not hide the errors of the next.
//! Tagged plug-in tables (`kind = "..."`) are dispatched here rather than by serde's internally
//! tagged enums, which buffer their input and would lose the positions.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rotor_rotators::kinds::Kinds;
use rotor_rotators::{RotatorConfig, SecretRef};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{
    AlertConfig, Config, ConfigFile, Credential, CredentialConfig,
    DEFAULT_EXTERNAL_SECRETS_REFRESH, DEFAULT_GRACE, DEFAULT_STORE_URL, DefaultsConfig,
    Diagnostics, DrillConfig, Duration, RetryConfig, SourceFile, StoreConfig, VaultConfig,
};
use crate::config::MaxAge;
use crate::policy::{Cadence, RetryPolicy, Schedule, Window};

/// Where something was declared, for "first declared at" messages.
struct Declared {
    file: usize,
    span: Range<usize>,
    /// Where each of the block's own keys has its value, so an error about one setting points
    /// at that setting rather than at the block's header.
    fields: BTreeMap<String, Range<usize>>,
}

impl Declared {
    fn at(file: usize, span: Range<usize>) -> Self {
        Self {
            file,
            span,
            fields: BTreeMap::new(),
        }
    }

    /// The span of setting `field` when it was written in the block, else the block's own.
    fn span_of(&self, field: &str) -> Range<usize> {
        self.fields
            .get(field)
            .cloned()
            .unwrap_or_else(|| self.span.clone())
    }
}

#[derive(Default)]
struct Loader {
    files: Vec<SourceFile>,
    diagnostics: Diagnostics,
    store: Option<(StoreConfig, Declared)>,
    drill: Option<(DrillConfig, Declared)>,
    limits: Option<(crate::config::LimitsConfig, Declared)>,
    metrics: Option<(crate::config::MetricsConfig, Declared)>,
    defaults: Option<(DefaultsConfig, Declared)>,
    vaults: BTreeMap<String, (VaultConfig, Declared)>,
    alerts: BTreeMap<String, (AlertConfig, Declared)>,
    hooks: BTreeMap<String, (crate::notify::HookConfig, Declared)>,
    /// The parts that declare credentials, in file order, and whether their settings tables
    /// were read already: credentials are read once every setting is known, a part at a time.
    credential_parts: Vec<(usize, bool)>,
    /// `[[credential]]` headers seen: what the credentials' vector is sized to.
    credential_headers: usize,
    /// What is allowed but deserves a look (`rotor validate` prints them).
    warnings: Vec<super::Diagnostic>,
}

/// What resolving each credential needs: the defaults, and what came before it.
struct Resolving {
    credentials: Vec<Credential>,
    defaults: DefaultsConfig,
    defaults_file: usize,
    /// Every credential read, kept or not, in the order read: duplicates are found once all
    /// are, by sorting, which costs a few bytes a credential where maps of their names cost
    /// hundreds.
    written: Vec<Written>,
    /// The id, vault and path of each credential that was not kept.
    rejected: Vec<(String, String, String)>,
}

/// Where a credential's id and vault path are written.
struct Written {
    file: usize,
    id: Range<usize>,
    path: Range<usize>,
    /// Its index in `credentials` if it was kept, else in `rejected`.
    kept: Result<usize, usize>,
}

/// Each item whose `key` an item before it has, with the first that has it.
fn repeats<'a, T, K: Ord>(items: &'a [T], key: impl Fn(&'a T) -> K) -> Vec<(&'a T, &'a T)> {
    let mut order: Vec<&T> = items.iter().collect();
    // Stable: among equal keys the earliest item stays first.
    order.sort_by_key(|item| key(item));
    let mut found = Vec::new();
    let mut first = 0;
    for i in 1..order.len() {
        if key(order[i]) == key(order[first]) {
            found.push((order[first], order[i]));
        } else {
            first = i;
        }
    }
    found
}

/// What a credential's `max_age` resolves to before its schedule is known.
enum MaxAgeChoice {
    /// Given, on the credential or in `[defaults]`, with where it was written.
    Explicit(Duration, Range<usize>),
    /// `max_age = "none"`.
    OptedOut,
    /// Not given: `default_max_age` of the schedule's longest interval.
    Default,
}

/// The maximum age of a credential that names none: twice the longest time its schedule lets
/// pass between two rotations (interval, jitter and the longest closed window). A schedule
/// that works never reaches it; one that stops firing (a stuck run, a window that no longer
/// opens, a pause) alerts within one more period.
pub const DEFAULT_MAX_AGE_FACTOR: u64 = 2;

fn default_max_age(longest: Duration) -> Duration {
    Duration::from_secs(longest.as_secs().saturating_mul(DEFAULT_MAX_AGE_FACTOR))
}

/// Credentials per part of a file parsed on its own: small enough that the part's TOML tree
/// is small, large enough that parsing a part costs little beyond its text.
const CREDENTIALS_PER_PART: usize = 256;

/// A piece of a file's text that is a TOML document of its own.
#[derive(Debug, PartialEq)]
struct Part {
    start: usize,
    end: usize,
    /// Lines of the file before `start`.
    lines_before: usize,
    /// `[[credential]]` headers in it.
    credentials: usize,
    /// It holds nothing but `[[credential]]` tables and their sub-tables, so it is parsed
    /// only once every file's settings are known. A part that may hold anything else is
    /// parsed for its settings first; wrongly thinking so costs only a second parse.
    only_credentials: bool,
}

/// Splits a file's text into parts, cut before every `CREDENTIALS_PER_PART`-th
/// `[[credential]]` header (a header inside a multi-line string is not one).
fn parts(text: &str) -> Vec<Part> {
    let mut parts = vec![Part {
        start: 0,
        end: text.len(),
        lines_before: 0,
        credentials: 0,
        only_credentials: true,
    }];
    let mut open: Option<&str> = None;
    let mut offset = 0;
    let mut before_any_header = true;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        let part = parts.last_mut().expect("one part at least");
        if open.is_none() && trimmed.starts_with('[') {
            before_any_header = false;
            let header: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
            if header.starts_with("[[credential]]") {
                if part.credentials == CREDENTIALS_PER_PART {
                    part.end = offset;
                    parts.push(Part {
                        start: offset,
                        end: text.len(),
                        lines_before: line_no,
                        credentials: 0,
                        only_credentials: true,
                    });
                }
                parts.last_mut().expect("just pushed").credentials += 1;
            } else if !["[credential]", "[credential.", "[[credential."]
                .iter()
                .any(|prefix| header.starts_with(prefix))
            {
                part.only_credentials = false;
            }
        } else if open.is_none()
            && before_any_header
            && !trimmed.is_empty()
            && !trimmed.starts_with('#')
        {
            // A key of the root table.
            part.only_credentials = false;
        }
        for quotes in ["\"\"\"", "\'\'\'"] {
            if open.is_none_or(|q| q == quotes) && line.matches(quotes).count() % 2 == 1 {
                open = if open.is_some() { None } else { Some(quotes) };
            }
        }
        offset += line.len();
    }
    parts
}

/// Loads and validates config from files and folders (folders: every `*.toml` below them, in
/// name order). Returns every problem found, not only the first.
pub fn load(paths: &[PathBuf]) -> Result<Config, Diagnostics> {
    let mut loader = Loader::default();
    for path in paths {
        loader.add_path(path);
    }
    loader.finish()
}

/// Loads and validates config from `text`, as if read from the file `path` (the name errors
/// point at): what the fuzzer drives, and a way to check config that is not on disk.
pub fn load_text(path: &Path, text: String) -> Result<Config, Diagnostics> {
    let mut loader = Loader::default();
    loader.add_text(path, text);
    loader.finish()
}

impl Loader {
    fn warn(&mut self, file: usize, span: Option<Range<usize>>, message: impl Into<String>) {
        let d = self.files[file].diagnostic(span, message);
        self.warnings.push(d);
    }

    fn error(&mut self, file: usize, span: Option<Range<usize>>, message: impl Into<String>) {
        let d = self.files[file].diagnostic(span, message);
        self.diagnostics.push(d);
    }

    fn io_error(&mut self, path: &Path, message: String) {
        let file = SourceFile::new(path, String::new());
        self.diagnostics.push(file.diagnostic(None, message));
    }

    fn add_path(&mut self, path: &Path) {
        if path.is_dir() {
            let mut found = Vec::new();
            if let Err(e) = collect_toml_files(path, &mut found) {
                self.io_error(path, format!("cannot read folder: {e}"));
            }
            if found.is_empty() {
                self.io_error(path, "folder holds no .toml files".into());
            }
            found.sort();
            for file in found {
                self.add_file(&file);
            }
        } else {
            self.add_file(path);
        }
    }

    fn add_file(&mut self, path: &Path) {
        // A FIFO or a device would block the read or never end: only regular files are config.
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => {
                return self.io_error(
                    path,
                    "not a regular file (a FIFO, a device or a socket): config must be a file"
                        .into(),
                );
            }
            _ => {}
        }
        match std::fs::read_to_string(path) {
            Ok(text) => self.add_text(path, text),
            Err(e) => self.io_error(path, format!("cannot read config file: {e}")),
        }
    }

    fn add_text(&mut self, path: &Path, text: String) {
        // Parsed a few hundred `[[credential]]` at a time: a TOML tree costs tens of bytes per
        // byte of text, and a file of 100,000 credentials must not be held whole as one.
        for part in parts(&text) {
            let lines_before = part.lines_before;
            let part_text = text[part.start..part.end].to_owned();
            self.files
                .push(SourceFile::part(path, part_text, lines_before));
            let index = self.files.len() - 1;
            self.credential_headers += part.credentials;
            if part.only_credentials {
                self.credential_parts.push((index, false));
            } else {
                self.add_settings(index);
            }
        }
    }

    /// Reports a part's syntax errors; true if there were any.
    fn syntax_errors(&mut self, index: usize, errors: Vec<toml::de::Error>) -> bool {
        let any = !errors.is_empty();
        for e in errors {
            self.error(index, e.span(), e.message().to_owned());
        }
        any
    }

    /// Reads the settings tables of part `index`; its credentials wait for [`Loader::finish`].
    fn add_settings(&mut self, index: usize) {
        let text = self.files[index].text.clone();
        let (root, syntax_errors) = DeTable::parse_recoverable(&text);
        if self.syntax_errors(index, syntax_errors) {
            return;
        }
        for (key, value) in root.into_inner() {
            let key_span = key.span();
            match key.get_ref().as_ref() {
                "store" => self.add_store(index, value),
                "defaults" => self.add_defaults(index, value),
                "vaults" => self.add_named(index, value, "vault"),
                "alerts" => self.add_named(index, value, "alert"),
                "hooks" => self.add_named(index, value, "hook"),
                "credential" => self.credential_parts.push((index, true)),
                "drill" => self.add_drill(index, value),
                "limits" => self.add_limits(index, value),
                "metrics" => self.add_metrics(index, value),
                other => self.error(
                    index,
                    Some(key_span),
                    format!("unknown key `{other}`; expected one of: store, defaults, vaults, alerts, hooks, credential, drill, limits, metrics"),
                ),
            }
        }
    }

    fn deserialize<T: for<'de> Deserialize<'de>>(
        &mut self,
        file: usize,
        value: Spanned<DeValue<'_>>,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(file, e.span(), e.message().to_owned());
                None
            }
        }
    }

    fn add_drill(&mut self, file: usize, value: Spanned<DeValue<'_>>) {
        let span = value.span();
        let Some(drill) = self.deserialize::<DrillConfig>(file, value) else {
            return;
        };
        if drill.every == Some(Duration::ZERO) {
            self.error(
                file,
                Some(span.clone()),
                "drill.every must be longer than 0s",
            );
        }
        self.declare_once(|l| &mut l.drill, "drill", drill, file, span);
    }

    fn add_limits(&mut self, file: usize, value: Spanned<DeValue<'_>>) {
        let span = value.span();
        let Some(limits) = self.deserialize::<crate::config::LimitsConfig>(file, value) else {
            return;
        };
        if limits.concurrency == Some(0) {
            self.error(
                file,
                Some(span.clone()),
                "limits.concurrency must be at least 1",
            );
        }
        for (kind, l) in &limits.provider {
            if !<RotatorConfig as Kinds>::KINDS.contains(&kind.as_str()) {
                self.error(
                    file,
                    Some(span.clone()),
                    format!(
                        "[limits.provider.{kind}]: unknown provider kind; expected one of: {}",
                        <RotatorConfig as Kinds>::KINDS.join(", ")
                    ),
                );
            }
            if l.concurrency == Some(0) {
                self.error(
                    file,
                    Some(span.clone()),
                    format!("[limits.provider.{kind}]: concurrency must be at least 1"),
                );
            }
            if l.per_second.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                self.error(
                    file,
                    Some(span.clone()),
                    format!("[limits.provider.{kind}]: per_second must be a number above 0"),
                );
            }
        }
        self.declare_once(|l| &mut l.limits, "limits", limits, file, span);
    }

    /// Keeps `value` as the config's one `[name]` table, or reports where `[name]` was
    /// declared first.
    fn declare_once<T>(
        &mut self,
        slot: fn(&mut Self) -> &mut Option<(T, Declared)>,
        name: &str,
        value: T,
        file: usize,
        span: Range<usize>,
    ) {
        if let Some((_, first)) = slot(self).as_ref() {
            let first = Declared::at(first.file, first.span.clone());
            let at = self.position(&first);
            return self.error(
                file,
                Some(span),
                format!("[{name}] is declared twice (first at {at})"),
            );
        }
        *slot(self) = Some((value, Declared::at(file, span)));
    }

    fn add_metrics(&mut self, file: usize, value: Spanned<DeValue<'_>>) {
        let span = value.span();
        let Some(metrics) = self.deserialize::<crate::config::MetricsConfig>(file, value) else {
            return;
        };
        self.declare_once(|l| &mut l.metrics, "metrics", metrics, file, span);
    }

    fn add_store(&mut self, file: usize, value: Spanned<DeValue<'_>>) {
        let span = value.span();
        let url_span = value_span(&value, "url");
        let Some(store) = self.deserialize::<StoreConfig>(file, value) else {
            return;
        };
        // A URL that is wrong already (it may hold a password, masked in that error) is not
        // echoed again by the transport check.
        if let Some(problem) = store_url_problem(&store.url) {
            let at = url_span.clone().unwrap_or_else(|| span.clone());
            self.error(file, Some(at), problem);
        } else if let Some(problem) = rotor_rotators::net::transport_problem(&store.url) {
            let at = Some(url_span.unwrap_or_else(|| span.clone()));
            if store.insecure_transport {
                self.warn(
                    file,
                    at,
                    format!("[store] `url`: {problem}; allowed by insecure_transport = true"),
                );
            } else {
                self.error(file, at, format!("[store] `url`: {problem}; or write `insecure_transport = true` in [store] if the network to it is trusted"));
            }
        }
        self.declare_once(|l| &mut l.store, "store", store, file, span);
    }

    fn add_defaults(&mut self, file: usize, value: Spanned<DeValue<'_>>) {
        let span = value.span();
        let Some(defaults) = self.deserialize::<DefaultsConfig>(file, value) else {
            return;
        };
        if let Some(retry) = &defaults.retry {
            self.check_retry(file, retry);
        }
        self.declare_once(|l| &mut l.defaults, "defaults", defaults, file, span);
    }

    /// `[vaults.NAME]`, `[alerts.NAME]` or `[hooks.NAME]`: a table of tagged tables.
    fn add_named(&mut self, file: usize, value: Spanned<DeValue<'_>>, what: &str) {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            return self.error(
                file,
                Some(span),
                format!("expected a table of {what}s, e.g. [{what}s.NAME]"),
            );
        };
        for (name, body) in table {
            let name_span = name.span();
            let name = name.into_inner().into_owned();
            let declared = Declared {
                file,
                span: name_span.clone(),
                fields: field_spans(&body),
            };
            match what {
                "vault" => self.add_kind(file, body, what, name, declared, |l| &mut l.vaults),
                "hook" => {
                    if let Some(problem) = name_problem(&name) {
                        self.error(
                            file,
                            Some(name_span),
                            format!("hook `{name}`: invalid name: {problem}"),
                        );
                    }
                    self.add_kind(file, body, what, name, declared, |l| &mut l.hooks)
                }
                _ => self.add_kind(file, body, what, name, declared, |l| &mut l.alerts),
            }
        }
    }

    /// One named plug-in of any family: its kind's settings, checked, then declared.
    fn add_kind<T: Kinds>(
        &mut self,
        file: usize,
        body: Spanned<DeValue<'_>>,
        what: &str,
        name: String,
        declared: Declared,
        table: fn(&mut Self) -> &mut BTreeMap<String, (T, Declared)>,
    ) {
        let Some(config) = self.tagged(file, body, what, T::KINDS, T::deserialize_kind) else {
            return;
        };
        if let Err(problem) = config.common().validate() {
            self.error(
                file,
                Some(declared.span.clone()),
                format!("{what} `{name}`: {problem}"),
            );
        }
        self.declare(table, what, name, config, declared);
    }

    /// Records a named table, unless the name is taken: then an error names the first place.
    fn declare<T>(
        &mut self,
        table: fn(&mut Self) -> &mut BTreeMap<String, (T, Declared)>,
        what: &str,
        name: String,
        config: T,
        declared: Declared,
    ) {
        let first = table(self)
            .get(&name)
            .map(|(_, first)| Declared::at(first.file, first.span.clone()));
        match first {
            Some(first) => {
                let at = self.position(&first);
                self.error(
                    declared.file,
                    Some(declared.span),
                    format!("{what} `{name}` is declared twice (first at {at})"),
                );
            }
            None => {
                table(self).insert(name, (config, declared));
            }
        }
    }

    /// Deserializes a table tagged by `kind`, with exact positions for errors inside it.
    fn tagged<'a, T>(
        &mut self,
        file: usize,
        value: Spanned<DeValue<'a>>,
        what: &str,
        kinds: &[&str],
        by_kind: impl FnOnce(&str, ValueDeserializer<'a>) -> Result<Option<T>, toml::de::Error>,
    ) -> Option<T> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.error(
                file,
                Some(span),
                format!("expected a {what} table with a `kind`"),
            );
            return None;
        };
        let mut kind = None;
        let mut rest = DeTable::new();
        for (key, v) in table {
            if key.get_ref() == "kind" {
                kind = Some(v);
            } else {
                rest.insert(key, v);
            }
        }
        let expected = kinds.join(", ");
        let Some(kind) = kind else {
            self.error(
                file,
                Some(span),
                format!("{what} has no `kind`; expected one of: {expected}"),
            );
            return None;
        };
        let kind_span = kind.span();
        let Some(kind_name) = kind.get_ref().as_str().map(str::to_owned) else {
            self.error(
                file,
                Some(kind_span),
                format!("{what} `kind` must be a string; expected one of: {expected}"),
            );
            return None;
        };
        match by_kind(
            &kind_name,
            ValueDeserializer::from(Spanned::new(span.clone(), DeValue::Table(rest))),
        ) {
            Ok(Some(config)) => Some(config),
            Ok(None) => {
                self.error(
                    file,
                    Some(kind_span),
                    format!("unknown {what} kind `{kind_name}`; expected one of: {expected}"),
                );
                None
            }
            Err(e) => {
                self.error(file, e.span().or(Some(span)), e.message().to_owned());
                None
            }
        }
    }

    /// Reads the credentials of part `index`, each resolved against the settings as soon as
    /// it is parsed, so that only one part's tree is held at a time.
    fn add_credential_part(&mut self, index: usize, settings_read: bool, r: &mut Resolving) {
        let text = self.files[index].text.clone();
        let (root, syntax_errors) = DeTable::parse_recoverable(&text);
        // A part whose settings were read reported its syntax errors then.
        if !settings_read && self.syntax_errors(index, syntax_errors) {
            return;
        }
        for (key, value) in root.into_inner() {
            let key_span = key.span();
            match key.get_ref().as_ref() {
                "credential" => self.add_credentials(index, value, r),
                _ if settings_read => {}
                // Only if a header went unseen when the file was split (see `parts`).
                other => self.error(
                    index,
                    Some(key_span),
                    format!("`{other}` was found among credentials and not read; move it above the file's first [[credential]]"),
                ),
            }
        }
    }

    fn add_credentials(&mut self, file: usize, value: Spanned<DeValue<'_>>, r: &mut Resolving) {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            return self.error(file, Some(span), "expected [[credential]] tables");
        };
        for item in items {
            let span = item.span();
            let DeValue::Table(table) = item.into_inner() else {
                self.error(file, Some(span), "expected a [[credential]] table");
                continue;
            };
            let mut rotator = None;
            let mut rest = DeTable::new();
            for (key, v) in table {
                if key.get_ref() == "rotator" {
                    rotator = Some(v);
                } else {
                    rest.insert(key, v);
                }
            }
            let rotator_fields = rotator.as_ref().map(field_spans).unwrap_or_default();
            let rotator = match rotator {
                Some(r) => self.tagged(
                    file,
                    r,
                    "rotator",
                    <RotatorConfig as Kinds>::KINDS,
                    <RotatorConfig as Kinds>::deserialize_kind,
                ),
                None => {
                    let kinds = <RotatorConfig as Kinds>::KINDS.join(", ");
                    self.error(file, Some(span.clone()), format!("credential has no `rotator`; add a rotator table with a `kind` ({kinds})"));
                    None
                }
            };
            let Some(credential) = self
                .deserialize::<CredentialConfig>(file, Spanned::new(span, DeValue::Table(rest)))
            else {
                continue;
            };
            if let Some(rotator) = rotator {
                self.resolve(credential, rotator, file, &rotator_fields, r);
            }
        }
    }

    fn check_retry(&mut self, file: usize, retry: &Spanned<RetryConfig>) {
        let r = retry.get_ref();
        if r.max_attempts == 0 {
            self.error(
                file,
                Some(retry.span()),
                "retry.max_attempts must be at least 1",
            );
        }
        if r.initial > r.max {
            self.error(
                file,
                Some(retry.span()),
                format!(
                    "retry.initial ({}) is longer than retry.max ({})",
                    r.initial, r.max
                ),
            );
        }
    }

    fn position(&self, declared: &Declared) -> String {
        let d = self.files[declared.file].diagnostic(Some(declared.span.clone()), "");
        format!("{}:{}:{}", d.path.display(), d.line, d.column)
    }

    fn check_alert_names(&mut self, file: usize, names: &[Spanned<String>]) {
        for name in names {
            if !self.alerts.contains_key(name.get_ref()) {
                let declared = self.alerts.keys().cloned().collect::<Vec<_>>().join(", ");
                self.error(
                    file,
                    Some(name.span()),
                    format!(
                        "unknown alert `{}`; declared alerts: {}",
                        name.get_ref(),
                        or_none(&declared)
                    ),
                );
            }
        }
    }

    /// Every secret reference of a vault, an alert sink or a hook names a declared vault.
    fn check_named_secrets(&mut self) {
        let mut problems = Vec::new();
        let named = self
            .vaults
            .iter()
            .map(|(name, (c, d))| ("vault", name, c.common(), d))
            .chain(
                self.alerts
                    .iter()
                    .map(|(name, (c, d))| ("alert", name, c.common(), d)),
            )
            .chain(
                self.hooks
                    .iter()
                    .map(|(name, (c, d))| ("hook", name, c.common(), d)),
            );
        let mut warnings = Vec::new();
        for (what, name, settings, declared) in named {
            for (insecure, field, message) in
                transport_findings(&format!("{what} `{name}`"), settings)
            {
                let found = (declared.file, declared.span_of(field), message);
                if insecure {
                    warnings.push(found);
                } else {
                    problems.push(found);
                }
            }
            for reference in settings.secret_refs() {
                if let Some(problem) = reference_path_problem(reference) {
                    problems.push((
                        declared.file,
                        declared.span.clone(),
                        format!("{what} `{name}`: {problem}"),
                    ));
                }
                if let SecretRef::Vault { vault, .. } = reference
                    && !self.vaults.contains_key(vault)
                {
                    let known = self.vaults.keys().cloned().collect::<Vec<_>>().join(", ");
                    problems.push((
                        declared.file,
                        declared.span.clone(),
                        format!(
                            "{what} `{name}` refers to unknown vault `{vault}`; declared vaults: {}",
                            or_none(&known)
                        ),
                    ));
                }
            }
        }
        for (file, span, message) in problems {
            self.error(file, Some(span), message);
        }
        for (file, span, message) in warnings {
            self.warn(file, Some(span), message);
        }
    }

    /// `notify` names declared hooks; `retire_after = "notified"` needs at least one.
    fn check_notify(&mut self, file: usize, c: &CredentialConfig) {
        let names = c.notify.as_deref().unwrap_or_default();
        for name in names {
            if !self.hooks.contains_key(name.get_ref()) {
                let declared = self.hooks.keys().cloned().collect::<Vec<_>>().join(", ");
                self.error(
                    file,
                    Some(name.span()),
                    format!(
                        "unknown hook `{}`; declared hooks: {}",
                        name.get_ref(),
                        or_none(&declared)
                    ),
                );
            }
        }
        if let Some(after) = &c.retire_after
            && *after.get_ref() == crate::notify::RetireAfter::Notified
            && names.is_empty()
        {
            self.error(
                file,
                Some(after.span()),
                "`retire_after = \"notified\"` waits for the credential's hooks, but it has no `notify`; add `notify = [\"HOOK\"]` or remove `retire_after`",
            );
        }
    }

    /// `consumers = "external-secrets"`: the operator's refresh must fit twice into grace, or a
    /// consumer may get the new credential only after the old one is retired.
    fn consumers(
        &mut self,
        file: usize,
        c: &CredentialConfig,
        defaults: &crate::config::DefaultsConfig,
    ) -> Option<Duration> {
        let id = c.id.get_ref();
        let Some(consumers) = &c.consumers else {
            if c.refresh_interval.is_some() {
                self.error(
                    file,
                    Some(c.id.span()),
                    format!("`{id}` sets `refresh_interval`, which only `consumers = \"external-secrets\"` reads; add it or remove `refresh_interval`"),
                );
            }
            return None;
        };
        let refresh = c
            .refresh_interval
            .unwrap_or(DEFAULT_EXTERNAL_SECRETS_REFRESH);
        let grace = c.grace.or(defaults.grace).unwrap_or(DEFAULT_GRACE);
        if grace.as_std() < refresh.as_std() * 2 {
            self.warn(
                file,
                Some(consumers.span()),
                format!(
                    "`{id}`: the External Secrets Operator copies it every {refresh}, but its grace is {grace}: a pod may get the new credential only after the old one is retired; make grace at least {} or the ExternalSecret's refreshInterval (and `refresh_interval`) at most half the grace",
                    Duration::from_secs(refresh.as_std().as_secs() * 2)
                ),
            );
        }
        Some(refresh)
    }

    /// `retire_when = "unused"` needs a provider that tells of use, and settles with
    /// `retire_after` which of the two ends grace; `unused_for` and `on_still_used` belong to it.
    fn usage_gate(
        &mut self,
        file: usize,
        c: &CredentialConfig,
        rotator: &RotatorConfig,
    ) -> Option<crate::policy::usage::Gate> {
        use crate::policy::usage::{Gate, RetireWhen};
        let id = c.id.get_ref();
        let Some(when) = c
            .retire_when
            .as_ref()
            .filter(|w| *w.get_ref() == RetireWhen::Unused)
        else {
            if c.unused_for.is_some() || c.on_still_used.is_some() {
                self.error(
                    file,
                    Some(c.id.span()),
                    format!("`{id}` sets `unused_for` or `on_still_used`, which only `retire_when = \"unused\"` reads; add it or remove them"),
                );
            }
            return None;
        };
        if rotator.settings().usage_evidence().is_none() {
            self.error(
                file,
                Some(when.span()),
                format!(
                    "`{id}`: the {} rotator{} cannot tell whether the old credential is still used, so `retire_when = \"unused\"` would only wait out `grace`; remove it (see README, \"What rotor can tell of use\")",
                    rotator.kind(),
                    match rotator.kind() {
                        "postgres_password" | "mysql_password" => " with `strategy = \"single\"`",
                        "redis_acl_password" => " with `strategy = \"two_passwords\"` (use `alternating`)",
                        _ => "",
                    }
                ),
            );
            return None;
        }
        if c.retire_after.as_ref().map(|a| *a.get_ref())
            == Some(crate::notify::RetireAfter::Notified)
        {
            self.error(
                file,
                Some(when.span()),
                format!("`{id}` sets both `retire_after = \"notified\"` and `retire_when = \"unused\"`; choose one way to end grace early"),
            );
            return None;
        }
        let Some(unused_for) = c.unused_for else {
            self.error(
                file,
                Some(when.span()),
                format!("`{id}`: `retire_when = \"unused\"` needs `unused_for`, how long the old credential must go unused (e.g. \"15m\")"),
            );
            return None;
        };
        Some(Gate {
            unused_for: unused_for.as_std().as_millis() as i64,
            on_still_used: c.on_still_used.unwrap_or_default(),
        })
    }

    /// Keeps one credential resolved (defaults applied) if nothing is wrong with it, and
    /// notes where its names are written for [`Loader::check_unique`].
    fn resolve(
        &mut self,
        c: CredentialConfig,
        rotator: RotatorConfig,
        file: usize,
        rotator_fields: &BTreeMap<String, Range<usize>>,
        r: &mut Resolving,
    ) {
        let (id, path) = (c.id.span(), c.vault.path.span());
        let kept = match self.checked(
            &c,
            rotator,
            file,
            rotator_fields,
            &r.defaults,
            r.defaults_file,
        ) {
            Some(credential) => {
                r.credentials.push(credential);
                Ok(r.credentials.len() - 1)
            }
            None => {
                let names = (
                    c.id.into_inner(),
                    c.vault.name.into_inner(),
                    c.vault.path.into_inner(),
                );
                r.rejected.push(names);
                Err(r.rejected.len() - 1)
            }
        };
        r.written.push(Written {
            file,
            id,
            path,
            kept,
        });
    }

    /// No two credentials share an id, nor a vault and path: each later one is an error that
    /// names the first.
    fn check_unique(&mut self, r: &Resolving) {
        let names = |w: &Written| -> (&str, &str, &str) {
            match w.kept {
                Ok(i) => {
                    let c = &r.credentials[i];
                    (&c.id, &c.vault, &c.vault_path)
                }
                Err(i) => {
                    let (id, vault, path) = &r.rejected[i];
                    (id, vault, path)
                }
            }
        };
        for (first, later) in repeats(&r.written, |w| names(w).0) {
            let at = self.position(&Declared::at(first.file, first.id.clone()));
            let id = names(later).0;
            self.error(
                later.file,
                Some(later.id.clone()),
                format!("duplicate credential id `{id}` (first declared at {at})"),
            );
        }
        for (first, later) in repeats(&r.written, |w| (names(w).1, names(w).2)) {
            let at = self.position(&Declared::at(first.file, first.path.clone()));
            let (_, vault, path) = names(later);
            self.error(
                later.file,
                Some(later.path.clone()),
                format!(
                    "vault `{vault}` path `{path}` is already used by another credential (at {at})"
                ),
            );
        }
    }

    /// Checks one credential against the settings; returns it resolved if nothing is wrong.
    fn checked(
        &mut self,
        c: &CredentialConfig,
        rotator: RotatorConfig,
        file: usize,
        rotator_fields: &BTreeMap<String, Range<usize>>,
        defaults: &DefaultsConfig,
        defaults_file: usize,
    ) -> Option<Credential> {
        let errors_before = self.diagnostics.0.len();
        let id = c.id.get_ref().clone();
        if let Some(problem) = name_problem(&id) {
            self.error(
                file,
                Some(c.id.span()),
                format!("invalid credential id `{id}`: {problem}"),
            );
        }
        let vault_name = c.vault.name.get_ref().clone();
        if !self.vaults.contains_key(&vault_name) {
            let declared = self.vaults.keys().cloned().collect::<Vec<_>>().join(", ");
            self.error(
                file,
                Some(c.vault.name.span()),
                format!(
                    "unknown vault `{vault_name}`; declared vaults: {}",
                    or_none(&declared)
                ),
            );
        }
        let vault_path = c.vault.path.get_ref().clone();
        let kind_problem = || {
            let (vault, _) = self.vaults.get(&vault_name)?;
            vault.settings().path_problem(&vault_path)
        };
        if let Some(problem) = name_problem(&vault_path)
            .map(str::to_owned)
            .or_else(kind_problem)
        {
            self.error(
                file,
                Some(c.vault.path.span()),
                format!("invalid vault path `{vault_path}`: {problem}"),
            );
        }
        if let Some(names) = &c.alerts {
            self.check_alert_names(file, names);
        }
        self.check_notify(file, c);
        if let Some(retry) = &c.retry {
            self.check_retry(file, retry);
        }
        for (insecure, field, message) in
            transport_findings(&format!("rotator of `{id}`"), rotator.settings())
        {
            let at = rotator_fields.get(field).cloned().unwrap_or(c.id.span());
            if insecure {
                self.warn(file, Some(at), message);
            } else {
                self.error(file, Some(at), message);
            }
        }
        if let Err(problem) = rotator_problem(&rotator) {
            self.error(
                file,
                Some(c.id.span()),
                format!("rotator of `{id}`: {problem}"),
            );
        }
        for reference in rotator.settings().secret_refs() {
            if let Some(problem) = reference_path_problem(reference) {
                self.error(
                    file,
                    Some(c.id.span()),
                    format!("rotator of `{id}`: {problem}"),
                );
            }
            if let SecretRef::Vault { vault, .. } = reference
                && !self.vaults.contains_key(vault)
            {
                let declared = self.vaults.keys().cloned().collect::<Vec<_>>().join(", ");
                self.error(
                    file,
                    Some(c.id.span()),
                    format!(
                        "rotator of `{id}` refers to unknown vault `{vault}`; declared vaults: {}",
                        or_none(&declared)
                    ),
                );
            }
        }
        let usage_gate = self.usage_gate(file, c, &rotator);
        let external_secrets_refresh = self.consumers(file, c, defaults);
        let max_age = self.max_age(file, c, defaults, defaults_file);
        let explicit = match &max_age {
            MaxAgeChoice::Explicit(limit, span) => Some((*limit, span.clone())),
            _ => None,
        };
        let schedule = self.schedule(file, c, defaults, explicit, defaults_file);
        if self.diagnostics.0.len() > errors_before {
            return None;
        }
        let mut schedule = schedule?;
        if matches!(max_age, MaxAgeChoice::Default) {
            schedule.max_age = schedule.longest_interval().map(default_max_age);
        }
        if let RotatorConfig::Manual(manual) = &rotator {
            if !matches!(schedule.cadence, Cadence::Manual) {
                self.error(
                        file,
                        Some(c.schedule.span()),
                        format!("`{id}` has a `manual` rotator: people rotate it, so write `schedule = {{ manual = true }}` (rotor reminds them from `max_age` or `expires_at`)"),
                    );
                return None;
            }
            if schedule.max_age.is_none() && manual.expires_at.is_none() {
                self.error(
                        file,
                        Some(c.id.span()),
                        format!("`{id}` has a `manual` rotator but neither `max_age` nor `rotator.expires_at`: rotor cannot tell when it is due"),
                    );
                return None;
            }
        }
        let retry = c
            .retry
            .as_ref()
            .or(defaults.retry.as_ref())
            .map(|r| r.get_ref().clone());
        let retry = retry.map_or_else(RetryPolicy::default, |r| RetryPolicy {
            max_attempts: r.max_attempts,
            initial: r.initial.as_std(),
            max: r.max.as_std(),
        });
        let alerts = c.alerts.as_ref().or(defaults.alerts.as_ref());
        let alerts = alerts
            .map(|a| a.iter().map(|n| n.get_ref().clone()).collect())
            .unwrap_or_default();
        let schedule_hash = schedule_hash(c.schedule.get_ref(), &schedule);
        Some(Credential {
            id,
            rotator,
            vault: vault_name,
            vault_path,
            schedule,
            grace: c.grace.or(defaults.grace).unwrap_or(DEFAULT_GRACE),
            alerts,
            notify: c
                .notify
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|n| n.get_ref().clone())
                .collect(),
            retire_after: c
                .retire_after
                .as_ref()
                .map(|a| *a.get_ref())
                .unwrap_or_default(),
            usage_gate,
            external_secrets_refresh,
            retry,
            schedule_hash,
        })
    }

    fn finish(mut self) -> Result<Config, Diagnostics> {
        let defaults = self
            .defaults
            .as_ref()
            .map(|(d, decl)| (d.clone(), decl.file))
            .unwrap_or_default();
        let (defaults, defaults_file) = defaults;
        if let Some(names) = &defaults.alerts {
            self.check_alert_names(defaults_file, names);
        }
        self.check_named_secrets();
        let mut r = Resolving {
            credentials: Vec::with_capacity(self.credential_headers),
            defaults,
            defaults_file,
            written: Vec::with_capacity(self.credential_headers),
            rejected: Vec::new(),
        };
        for (index, settings_read) in std::mem::take(&mut self.credential_parts) {
            self.add_credential_part(index, settings_read, &mut r);
        }
        self.check_unique(&r);
        let credentials = r.credentials;
        if !self.diagnostics.is_empty() {
            self.diagnostics
                .0
                .sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
            return Err(self.diagnostics);
        }
        let store = self.store.map(|(s, _)| s).unwrap_or(StoreConfig {
            url: DEFAULT_STORE_URL.into(),
            password: None,
            key: None,
            anchor_file: None,
            anchor_every: None,
            insecure_transport: false,
        });
        let mut config = Config::new(
            store,
            self.vaults.into_iter().map(|(k, (v, _))| (k, v)).collect(),
            self.alerts.into_iter().map(|(k, (v, _))| (k, v)).collect(),
            credentials,
            {
                let mut paths: Vec<PathBuf> = self.files.iter().map(|f| f.path.clone()).collect();
                paths.dedup();
                paths
            },
        );
        config.warnings = self.warnings;
        config.drill = self.drill.map(|(d, _)| d).unwrap_or_default();
        config.limits = self.limits.map(|(l, _)| l).unwrap_or_default();
        config.metrics = self.metrics.map(|(m, _)| m).unwrap_or_default();
        config.hooks = self.hooks.into_iter().map(|(k, (v, _))| (k, v)).collect();
        Ok(config)
    }

    /// A credential's `max_age`: its own, else `[defaults]`'s, else the default its schedule
    /// implies. `"none"` only on the credential itself and with a reason, and it is warned of.
    fn max_age(
        &mut self,
        file: usize,
        c: &CredentialConfig,
        defaults: &DefaultsConfig,
        defaults_file: usize,
    ) -> MaxAgeChoice {
        if let Some(m) = &defaults.max_age
            && *m.get_ref() == MaxAge::None
        {
            self.error(
                defaults_file,
                Some(m.span()),
                "defaults.max_age cannot be \"none\": every credential has a maximum age; one may opt out on its own with `max_age = \"none\"` and `max_age_reason`",
            );
        }
        match (&c.max_age, &defaults.max_age) {
            (Some(m), _) if *m.get_ref() == MaxAge::None => {
                match c.max_age_reason.as_deref().map(str::trim) {
                    Some(reason) if !reason.is_empty() => self.warn(
                        file,
                        Some(m.span()),
                        format!(
                            "`{}` has no maximum age (max_age = \"none\"): it may grow old without an alert; reason given: {reason}",
                            c.id.get_ref()
                        ),
                    ),
                    _ => self.error(
                        file,
                        Some(m.span()),
                        format!(
                            "`{}` opts out of a maximum age without a reason: add `max_age_reason = \"...\"` saying why it may grow old without bound, or give max_age a duration",
                            c.id.get_ref()
                        ),
                    ),
                }
                MaxAgeChoice::OptedOut
            }
            (Some(m), _) | (None, Some(m)) => match m.get_ref() {
                MaxAge::Limit(limit) => MaxAgeChoice::Explicit(*limit, m.span()),
                MaxAge::None => MaxAgeChoice::OptedOut,
            },
            (None, None) => MaxAgeChoice::Default,
        }
    }

    fn schedule(
        &mut self,
        file: usize,
        c: &CredentialConfig,
        defaults: &DefaultsConfig,
        max_age: Option<(Duration, Range<usize>)>,
        defaults_file: usize,
    ) -> Option<Schedule> {
        let span = c.schedule.span();
        let s = c.schedule.get_ref();
        let cadence = match (&s.every, &s.cron, s.manual) {
            (Some(every), None, false) => {
                if *every == Duration::ZERO {
                    self.error(file, Some(span), "schedule.every must be longer than 0s");
                    return None;
                }
                Cadence::Every(*every)
            }
            (None, Some(cron), false) => Cadence::Cron(Box::new(cron.clone())),
            (None, None, true) => Cadence::Manual,
            _ => {
                self.error(
                    file,
                    Some(span),
                    "schedule needs exactly one of `every`, `cron` or `manual = true`",
                );
                return None;
            }
        };
        let window = s.window.as_ref().map(|w| Window {
            days: w.days,
            start: w.start.0,
            end: w.end.0,
        });
        if let Some(w) = &window
            && w.never_opens()
        {
            self.error(file, Some(span.clone()), "schedule.window never opens: it needs at least one day and `end` different from `start`");
            return None;
        }
        let schedule = Schedule {
            cadence,
            tz: s.timezone.map_or(chrono_tz::UTC, |t| t.0),
            window,
            jitter: c.jitter.or(defaults.jitter).unwrap_or(Duration::ZERO),
            max_age: max_age.as_ref().map(|(limit, _)| *limit),
            next_override: s.next.map(|t| t.0),
        };
        if let (Some((max_age, max_age_span)), Some(longest)) =
            (max_age, schedule.longest_interval())
            && longest > max_age
        {
            // The max_age may come from [defaults] in another file: point at it there.
            let max_age_file = if c.max_age.is_some() {
                file
            } else {
                defaults_file
            };
            self.error(
                max_age_file,
                Some(max_age_span),
                format!(
                    "max_age {max_age} is shorter than this schedule can honour: rotations may be up to {longest} apart \
                     (interval, jitter and the longest closed window); shorten the schedule or raise max_age"
                ),
            );
            // ...and at the schedule that cannot honour it.
            if c.max_age.is_none() {
                self.error(
                    file,
                    Some(span),
                    format!("this schedule cannot honour defaults.max_age {max_age}"),
                );
            }
            return None;
        }
        Some(schedule)
    }
}

/// The `.toml` files under `dir`. Hidden entries are skipped: editors' swap files, and the
/// `..data` link and timestamped folder a Kubernetes ConfigMap mount holds beside its files,
/// through which every file would otherwise be read three times.
fn collect_toml_files(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect_toml_files(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            found.push(path);
        }
    }
    Ok(())
}

/// Where each key of table `value` has its value written.
fn field_spans(value: &Spanned<DeValue<'_>>) -> BTreeMap<String, Range<usize>> {
    match value.get_ref() {
        DeValue::Table(table) => table
            .iter()
            .map(|(k, v)| (k.get_ref().to_string(), v.span()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Where `key`'s value is written in table `value`: an error about it points there, not at
/// the table's header.
fn value_span(value: &Spanned<DeValue<'_>>, key: &str) -> Option<Range<usize>> {
    match value.get_ref() {
        DeValue::Table(table) => table.get(key).map(|v| v.span()),
        _ => None,
    }
}

fn or_none(list: &str) -> &str {
    if list.is_empty() { "(none)" } else { list }
}

/// Credential ids and vault paths become file names and URL paths: keep them to a safe set.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.'))
    {
        return Some("use only letters, digits, `_`, `-`, `.` and `/`");
    }
    if name.starts_with('/')
        || name.ends_with('/')
        || name
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Some("segments between `/` must be non-empty and not `.` or `..`");
    }
    None
}

/// What the transport check finds in `settings`: `(allowed, message)` for each endpoint that
/// would carry secrets unprotected, allowed when its block says `insecure_transport = true`.
fn transport_findings(
    whose: &str,
    settings: &dyn rotor_rotators::kinds::Settings,
) -> Vec<(bool, &'static str, String)> {
    settings
        .endpoints()
        .into_iter()
        .filter_map(|e| {
            let problem = rotor_rotators::net::transport_problem(e.url)?;
            Some(if e.insecure_allowed {
                (true, e.field, format!("{whose}: `{}` {problem}; allowed by insecure_transport = true", e.field))
            } else {
                (false, e.field, format!(
                    "{whose}: `{}` {problem}, or write `insecure_transport = true` on this block if the network to it is trusted",
                    e.field
                ))
            })
        })
        .collect()
}

/// A secret read from a vault is read at a vault path: it must be one (`../outside/x` read a
/// file beside the vault's folder).
fn reference_path_problem(reference: &SecretRef) -> Option<String> {
    let SecretRef::Vault { path, .. } = reference else {
        return None;
    };
    name_problem(path)
        .map(|problem| format!("invalid vault path `{path}` in a secret reference: {problem}"))
}

fn rotator_problem(rotator: &RotatorConfig) -> Result<(), String> {
    rotator.settings().validate()
}

fn store_url_problem(url: &str) -> Option<String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if rotor_rotators::secret_ref::url_has_password(url) {
            return Some("the store URL holds a literal secret (a password); a config file holds no secrets: remove it and set `password = { env = \"NAME\" }` (or { file = ... })".into());
        }
        return None;
    }
    if url.starts_with("sqlite:") {
        return None;
    }
    Some(format!(
        "unsupported store URL `{url}`: expected sqlite://PATH or postgres://USER@HOST/DB"
    ))
}

fn schedule_hash(config: &super::ScheduleConfig, schedule: &Schedule) -> String {
    let text = format!(
        "{}|{}|{:?}|{:?}",
        serde_json::to_string(config).unwrap_or_default(),
        schedule.jitter,
        schedule.max_age,
        schedule.tz
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The JSON Schema of a config file.
pub fn schema() -> serde_json::Value {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(ConfigFile)).expect("schema serializes");
    // `rotator` is dispatched by the loader (see the module comment), so serde skips it: add it.
    let rotator =
        serde_json::to_value(schemars::schema_for!(RotatorConfig)).expect("schema serializes");
    if let Some(credential) = schema.pointer_mut("/$defs/CredentialConfig") {
        credential["properties"]["rotator"] = rotator.clone();
        credential["properties"]["rotator"]
            .as_object_mut()
            .map(|o| {
                o.remove("$schema");
                o.remove("$defs")
            });
        if let Some(required) = credential["required"].as_array_mut() {
            required.push("rotator".into());
        }
    }
    if let (Some(defs), Some(rotator_defs)) =
        (schema.pointer("/$defs").cloned(), rotator.get("$defs"))
    {
        let mut merged = defs.as_object().cloned().unwrap_or_default();
        for (k, v) in rotator_defs.as_object().into_iter().flatten() {
            merged.insert(k.clone(), v.clone());
        }
        schema["$defs"] = serde_json::Value::Object(merged);
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each one-per-installation table may be in any file, once: a second names the first.
    #[test]
    fn a_table_declared_in_two_files_names_where_it_was_first() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
        for table in ["store", "defaults", "drill", "limits", "metrics"] {
            std::fs::write(&a, format!("[{table}]\n")).unwrap();
            std::fs::write(&b, format!("# second\n[{table}]\n")).unwrap();
            let problems = load(&[a.clone(), b.clone()]).unwrap_err().to_string();
            let expected = format!("[{table}] is declared twice (first at {}:1:1)", a.display());
            assert!(problems.contains(&expected), "{table}: {problems}");
            assert!(
                problems.contains(&format!("{}:2:", b.display())),
                "{problems}"
            );
        }
    }

    #[test]
    fn a_large_file_is_parsed_in_parts_and_errors_keep_their_lines() {
        let mut text = String::from(
            "[vaults.local]\nkind = \"file\"\ndir = \"v\"\nidentity = { file = \"k\" }\n",
        );
        for i in 0..600 {
            let every = if i == 555 { "often" } else { "30d" };
            text.push_str(&format!(
                "\n[[credential]]\nid = \"c{i}\"\nschedule = {{ every = \"{every}\" }}\nvault = {{ name = \"local\", path = \"c{i}\" }}\n[credential.rotator]\nkind = \"generated\"\n"
            ));
        }
        assert_eq!(parts(&text).len(), 3);
        let errors = load_text(&text).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        // 4 lines of vault, then 7 lines per credential; #555's schedule is its 4th line.
        assert_eq!(errors.0[0].line, 4 + 555 * 7 + 4, "{errors}");
        assert!(errors.0[0].source_line.contains("often"));
        let fixed = text.replace("\"often\"", "\"30d\"");
        let config = load_text(&fixed).unwrap();
        assert_eq!(config.credentials.len(), 600);
        assert_eq!(config.sources.len(), 1);
    }

    #[test]
    fn only_parts_of_nothing_but_credentials_wait_for_the_settings() {
        let credential = "[[credential]]\nid = \"c\"\n[credential.rotator]\nkind = \"generated\"\n";
        let many = credential.repeat(CREDENTIALS_PER_PART);
        let only =
            |text: &str| -> Vec<bool> { parts(text).iter().map(|p| p.only_credentials).collect() };
        assert_eq!(only(&many.repeat(2)), [true, true]);
        assert_eq!(only(&format!("# a comment\n\n{many}{many}")), [true, true]);
        assert_eq!(
            only(&format!("[store]\nurl = \"x\"\n{many}{many}")),
            [false, true]
        );
        assert_eq!(only(&format!("version = 1\n{many}{many}")), [false, true]);
        assert_eq!(
            only(&format!("{many}{many}[defaults]\ngrace = \"1d\"\n")),
            [true, false]
        );
        // A quoted table name is not recognised: that part is read twice, which is safe.
        assert_eq!(only(&format!("{many}[\"credential\".x]\n")), [false]);
        let counts: Vec<usize> = parts(&format!("{many}{credential}"))
            .iter()
            .map(|p| p.credentials)
            .collect();
        assert_eq!(counts, [CREDENTIALS_PER_PART, 1]);
    }

    #[test]
    fn settings_written_after_the_credentials_apply_to_them() {
        let mut text = String::new();
        for i in 0..600 {
            text.push_str(&format!(
                "\n[[credential]]\nid = \"c{i}\"\nschedule = {{ every = \"30d\" }}\nvault = {{ name = \"local\", path = \"c{i}\" }}\nalerts = [\"ops\"]\n[credential.rotator]\nkind = \"generated\"\n"
            ));
        }
        text.push_str("\n[defaults]\ngrace = \"7d\"\n\n[vaults.local]\nkind = \"file\"\ndir = \"v\"\nidentity = { file = \"k\" }\n\n[alerts.ops]\nkind = \"log\"\n");
        assert_eq!(parts(&text).len(), 3);
        let config = load_text(&text).unwrap();
        assert_eq!(config.credentials.len(), 600);
        assert!(
            config
                .credentials
                .iter()
                .all(|c| c.grace == Duration::from_secs(7 * 86_400) && c.alerts == ["ops"])
        );
        let ids: Vec<&str> = config.credentials.iter().map(|c| c.id.as_str()).collect();
        let expected: Vec<String> = (0..600).map(|i| format!("c{i}")).collect();
        assert_eq!(ids, expected, "credentials keep the file's order");

        // Each repeat, in any part, names the first; one with another error counts too.
        let repeated = text
            .replace("id = \"c590\"", "id = \"c3\"")
            .replace("id = \"c300\"", "id = \"c3\"")
            .replace(
                "path = \"c400\" }\nalerts = [\"ops\"]",
                "path = \"c7\" }\nalerts = [\"nope\"]",
            );
        let errors = load_text(&repeated).unwrap_err();
        // Credential i's header is on line 2 + 8 i; its id is the next line, its vault the 3rd.
        let line = |i: usize, of: usize| 2 + i * 8 + of;
        let found: Vec<(usize, &str)> = errors
            .0
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        let first_id = format!(":{}:6)", line(3, 1));
        let first_path = format!(":{}:34)", line(7, 3));
        assert_eq!(found.len(), 4, "{errors}");
        for (at, (line, message)) in [line(300, 1), line(590, 1)]
            .into_iter()
            .zip([found[0], found[3]])
        {
            assert_eq!(line, at, "{errors}");
            assert!(
                message.starts_with("duplicate credential id `c3` (first declared at "),
                "{errors}"
            );
            assert!(message.ends_with(&first_id), "{errors}");
        }
        assert_eq!(found[1].0, line(400, 3), "{errors}");
        assert!(
            found[1]
                .1
                .starts_with("vault `local` path `c7` is already used by another credential"),
            "{errors}"
        );
        assert!(found[1].1.contains(&first_path), "{errors}");
        assert_eq!(found[2].0, line(400, 4), "{errors}");
        assert!(found[2].1.starts_with("unknown alert `nope`"), "{errors}");
    }

    #[test]
    fn a_header_inside_a_multi_line_string_does_not_split() {
        let text = "a = \"\"\"\n[[credential]]\n\"\"\"\n".repeat(300);
        assert_eq!(parts(&text).len(), 1);
    }

    fn load_text(text: &str) -> Result<Config, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        load(&[path])
    }

    const VALID: &str = r#"
[vaults.local]
kind = "file"
dir = "v"
identity = { file = "k" }

[alerts.log]
kind = "log"

[defaults]
alerts = ["log"]

[[credential]]
id = "a/b"
schedule = { every = "7d" }
vault = { name = "local", path = "a/b" }
rotator = { kind = "generated", length = 48 }
"#;

    #[test]
    fn a_valid_file_loads_with_defaults_applied() {
        let config = load_text(VALID).unwrap();
        assert_eq!(config.store.url, DEFAULT_STORE_URL);
        let c = &config.credentials[0];
        assert_eq!(
            (c.id.as_str(), c.vault.as_str(), c.grace),
            ("a/b", "local", DEFAULT_GRACE)
        );
        assert_eq!(c.alerts, vec!["log".to_string()]);
    }

    #[test]
    fn every_error_is_collected_with_its_position() {
        let text = VALID.replace("path = \"a/b\" }", "path = \"a/b\" }\ncolour = \"red\"")
            + "\n[[credential]]\nid = \"c\"\nschedule = { every = \"7x\" }\nvault = { name = \"nope\", path = \"c\" }\nrotator = { kind = \"magic\" }\n";
        let err = load_text(&text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("unknown field `colour`"), "{shown}");
        assert!(shown.contains("unknown rotator kind `magic`"), "{shown}");
        assert!(shown.contains("invalid duration \"7x\""), "{shown}");
        let magic = err.0.iter().find(|d| d.message.contains("magic")).unwrap();
        assert_eq!(
            magic.line,
            text.lines().position(|l| l.contains("magic")).unwrap() + 1
        );
        assert_eq!(magic.column, "rotator = { kind = ".len() + 1);
    }

    #[test]
    fn every_credential_has_a_maximum_age_unless_it_opts_out_with_a_reason() {
        // Default: twice the longest interval the schedule allows.
        let config = load_text(VALID).unwrap();
        assert_eq!(
            config.credentials[0].schedule.max_age,
            Some(Duration::from_secs(14 * 86_400))
        );
        assert!(config.warnings.is_empty());
        // [defaults] max_age wins over the default.
        let text = VALID.replace("[defaults]\n", "[defaults]\nmax_age = \"10d\"\n");
        let config = load_text(&text).unwrap();
        assert_eq!(
            config.credentials[0].schedule.max_age,
            Some(Duration::from_secs(10 * 86_400))
        );
        // "none" without a reason: an error at the value.
        let none = VALID.replace(
            "schedule = { every = \"7d\" }",
            "schedule = { every = \"7d\" }\nmax_age = \"none\"",
        );
        let err = load_text(&none).unwrap_err();
        let d = &err.0[0];
        assert!(d.message.contains("without a reason"), "{err}");
        assert!(d.message.contains("max_age_reason"), "{err}");
        assert_eq!(
            (d.line, d.column),
            (
                none.lines()
                    .position(|l| l == "max_age = \"none\"")
                    .unwrap()
                    + 1,
                "max_age = ".len() + 1
            )
        );
        // With a reason: no maximum age, and a warning that says so.
        let reasoned = none.replace(
            "max_age = \"none\"",
            "max_age = \"none\"\nmax_age_reason = \"break-glass key kept offline\"",
        );
        let config = load_text(&reasoned).unwrap();
        assert_eq!(config.credentials[0].schedule.max_age, None);
        assert_eq!(config.warnings.len(), 1);
        let warning = config.warnings[0].to_string();
        assert!(
            warning.contains("no maximum age") && warning.contains("break-glass key kept offline"),
            "{warning}"
        );
        // [defaults] cannot opt every credential out.
        let text = VALID.replace("[defaults]\n", "[defaults]\nmax_age = \"none\"\n");
        let err = load_text(&text).unwrap_err().to_string();
        assert!(err.contains("defaults.max_age cannot be \"none\""), "{err}");
        // Neither a duration nor "none".
        let text = VALID.replace("[defaults]\n", "[defaults]\nmax_age = \"soon\"\n");
        let err = load_text(&text).unwrap_err().to_string();
        assert!(err.contains("invalid max_age \"soon\""), "{err}");
    }

    #[test]
    fn the_schema_lists_the_rotator() {
        let s = schema();
        assert!(
            s.pointer("/$defs/CredentialConfig/properties/rotator")
                .is_some(),
            "{s:#}"
        );
    }
}
