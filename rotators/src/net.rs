//! The redirect policy of every HTTP client that carries a credential (a vault token, an API
//! key, a signed body), in this crate and in rotor's: a redirect is followed only within the
//! origin the request was sent to, never to another host or port and never from https to
//! http; anything else comes back as the 3xx itself, which the caller reports. reqwest's
//! default follows ten redirects anywhere and drops only `Authorization` and `Cookie` on the
//! way: `X-Vault-Token`, custom auth headers and a 307's body went along.

use reqwest::redirect::{Attempt, Policy};

/// Redirects followed within one origin before giving up.
const MOST: usize = 5;

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
