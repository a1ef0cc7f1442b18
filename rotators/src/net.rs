//! The redirect policy of every HTTP client that carries a credential (a vault token, an API
//! key, a signed body), in this crate and in rotor's: a redirect is followed only within the
//! origin the request was sent to, never to another host or port and never from https to
//! http; anything else comes back as the 3xx itself, which the caller reports. reqwest's
//! default follows ten redirects anywhere and drops only `Authorization` and `Cookie` on the
//! way: `X-Vault-Token`, custom auth headers and a 307's body went along.

use reqwest::redirect::{Attempt, Policy};

/// Redirects followed within one origin before giving up.
const MOST: usize = 5;

/// The certificates of the PEM bundle `file`, for a client that trusts only them (a private
/// CA) instead of the system roots: `ClientBuilder::tls_certs_only`. The error names the file.
pub fn ca_bundle(file: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(file)
        .map_err(|e| format!("cannot read CA bundle {}: {e}", file.display()))?;
    reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("CA bundle {} is not PEM: {e}", file.display()))
}

pub fn same_origin_redirects() -> Policy {
    Policy::custom(follow_within_origin)
}

fn follow_within_origin(attempt: Attempt<'_>) -> reqwest::redirect::Action {
    let Some(first) = attempt.previous().first() else {
        return attempt.stop();
    };
    let next = attempt.url();
    let same_origin = first.scheme() == next.scheme()
        && first.host_str() == next.host_str()
        && first.port_or_known_default() == next.port_or_known_default();
    if same_origin && attempt.previous().len() <= MOST {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

/// Why an answer's body could not be read whole.
#[derive(Debug)]
pub enum BodyError {
    Read(reqwest::Error),
    /// Longer than the limit: nothing more was read.
    TooLarge {
        limit: usize,
    },
}

/// Reads `response`'s body up to `limit` bytes (zeroized when dropped: it may hold a secret).
/// An answer without end, or far larger than any the API sends, must not fill rotor's memory.
pub async fn read_within(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>, BodyError> {
    let mut body = zeroize::Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A network endpoint a block of config sends secrets to, for the loader's transport check.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// The setting that names it (`address`, `url`, `dsn`...).
    pub field: &'static str,
    pub url: &'a str,
    /// The operator wrote `insecure_transport = true` on the block.
    pub insecure_allowed: bool,
}

/// The endpoint a block names in `field`, if it names one: what its `endpoints` returns.
pub fn endpoint<'a>(
    field: &'static str,
    url: Option<&'a str>,
    insecure_allowed: bool,
) -> Vec<Endpoint<'a>> {
    url.map(|url| Endpoint {
        field,
        url,
        insecure_allowed,
    })
    .into_iter()
    .collect()
}

/// Why `url` would carry secrets unprotected, if it would: plaintext HTTP or Redis, or
/// PostgreSQL or MariaDB without a verified certificate, to anything but this machine. https,
/// rediss, `sslmode=verify-full` / `verify-ca`, `ssl-mode=verify_identity` / `verify_ca` and
/// loopback addresses pass.
pub fn transport_problem(url: &str) -> Option<String> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        // Not a URL (a PostgreSQL key=value string, a socket path): the kind's own check reads it.
        return postgres_keywords_problem(url);
    };
    let local = match parsed.host_str() {
        None | Some("") | Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
    };
    match parsed.scheme() {
        "https" | "rediss" => None,
        "http" | "redis" if local => None,
        "http" => Some("plaintext http://: use https://".to_owned()),
        "redis" => Some("plaintext redis://: use rediss:// (TLS)".to_owned()),
        "mysql" | "mariadb" => {
            let mode = query(&parsed, "ssl-mode").map(|v| v.to_ascii_lowercase());
            unverified(
                "ssl-mode",
                mode.as_deref(),
                ["verify_identity", "verify_ca"],
                local,
            )
        }
        "postgres" | "postgresql" => {
            let mode = query(&parsed, "sslmode");
            unverified(
                "sslmode",
                mode.as_deref(),
                ["verify-full", "verify-ca"],
                local,
            )
        }
        _ => None,
    }
}

/// The value of query parameter `key`.
fn query(url: &reqwest::Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Why a database URL's TLS mode `param` = `mode` does not verify the server, unless it is one
/// of `verifying` (the first is the one to advise) or the server is this machine.
fn unverified(
    param: &str,
    mode: Option<&str>,
    verifying: [&str; 2],
    local: bool,
) -> Option<String> {
    let [best, other_good] = verifying;
    match mode {
        Some(m) if verifying.contains(&m) => None,
        _ if local => None,
        Some(other) => Some(format!(
            "{param}={other} does not verify the server: use {param}={best} (or {other_good})"
        )),
        None => Some(format!(
            "no {param}: the default verifies nothing; add ?{param}={best} (or {other_good})"
        )),
    }
}

/// `host=... sslmode=...` connection strings.
fn postgres_keywords_problem(text: &str) -> Option<String> {
    if !text.contains("host=") {
        return None;
    }
    let value = |key: &str| {
        text.split_whitespace()
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
    };
    let host = value("host").unwrap_or("");
    let local = host.starts_with('/') || matches!(host, "localhost" | "127.0.0.1" | "::1");
    match value("sslmode") {
        Some("verify-full" | "verify-ca") => None,
        _ if local => None,
        _ => {
            Some("sslmode is not verify-full (or verify-ca): the server is not verified".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transport_problem;

    #[test]
    fn only_verified_or_local_transports_pass() {
        for ok in [
            "https://bao.internal:8200",
            "http://127.0.0.1:8200",
            "http://localhost:9093",
            "http://[::1]:80",
            "rediss://cache.internal:6380",
            "redis://127.0.0.1:6379",
            "postgres://rotor@db.internal/rotor?sslmode=verify-full",
            "postgres://rotor@127.0.0.1:5432/rotor",
            "mysql://rotor@db.internal:3306/app?ssl-mode=verify_identity",
            "mysql://rotor@127.0.0.1:3306/app",
            "host=/var/run/postgresql user=rotor",
        ] {
            assert_eq!(transport_problem(ok), None, "{ok}");
        }
        for bad in [
            "http://bao.internal:8200",
            "http://10.0.0.5/hooks",
            "redis://cache.internal:6379",
            "postgres://rotor@db.internal/rotor",
            "mysql://rotor@db.internal:3306/app",
            "mysql://rotor@db.internal:3306/app?ssl-mode=required",
            "postgres://rotor@db.internal/rotor?sslmode=require",
            "host=db.internal user=rotor sslmode=prefer",
        ] {
            assert!(transport_problem(bad).is_some(), "{bad}");
        }
    }
}
