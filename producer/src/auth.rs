//! Bearer tokens: who may publish, who may read.
//!
//! The producer knows a set of tokens, each with scopes (`--tokens-file`, or the same text in
//! `PRODUCER_TOKENS`): one line per token, `<token> <scope>[,<scope>…]`, `#` comments.
//! With none configured, every call is allowed (local use, the default). With some, every call
//! but health, reflection and the dashboard page needs a token with the call's [`Scope`]:
//! gRPC metadata `authorization: Bearer <token>`, HTTP `Authorization: Bearer <token>`, or on
//! the two endpoints a browser opens without headers (`EventSource` for `/events`, `WebSocket`
//! for `/ws`) the `access_token` query parameter (RFC 6750 §2.3).
//!
//! Tokens are compared in constant time (every known token is compared, whatever matches) and
//! never logged; errors never echo them.

use std::{collections::BTreeSet, fmt, path::Path, sync::Arc};

use subtle::ConstantTimeEq as _;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Append events: gRPC Publish, `POST /publish`, WebSocket `publish` messages.
    Publish,
    /// Read events and what describes them: Subscribe, Poll, SSE, WebSocket subscriptions,
    /// `GET /poll`, webhook subscriptions (a webhook reads on its owner's behalf), `/consumers`,
    /// `/store`.
    Read,
    /// `GET /metrics`, when `--metrics-auth` asks for a token there.
    Metrics,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Publish, Scope::Read, Scope::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::Metrics => "metrics",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call was refused. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this call needs a bearer token: send the metadata (or HTTP header) \
         `authorization: Bearer <token>`"
    )]
    Missing,
    #[error("the bearer token is not valid (or the authorization value is not `Bearer <token>`)")]
    Invalid,
    #[error("the bearer token lacks the `{scope}` scope this call needs")]
    ScopeMissing { scope: Scope },
}

/// The shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The scopes of one caller, once its token is checked; HTTP handlers find it in the request's
/// extensions (a WebSocket checks `publish` per message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    scopes: BTreeSet<Scope>,
}

impl Caller {
    /// Everything: the caller when no tokens are configured.
    pub fn anyone() -> Self {
        Self {
            scopes: Scope::ALL.into_iter().collect(),
        }
    }

    pub fn may(&self, scope: Scope) -> Result<(), AuthError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(AuthError::ScopeMissing { scope })
        }
    }
}

/// The known tokens; cheap to clone. Empty: authentication is off.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Arc<Vec<(Vec<u8>, Caller)>>,
}

impl fmt::Debug for Tokens {
    // The tokens themselves never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish()
    }
}

impl Tokens {
    /// From `--tokens-file` and/or `PRODUCER_TOKENS` (both may be given; their tokens add up).
    pub fn load(file: Option<&Path>, inline: Option<&str>) -> Result<Self, String> {
        let mut entries = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--tokens-file {}: {e}", path.display()))?;
            entries.extend(
                parse(&text).map_err(|e| format!("--tokens-file {}: {e}", path.display()))?,
            );
        }
        if let Some(text) = inline {
            entries.extend(parse(text).map_err(|e| format!("PRODUCER_TOKENS: {e}"))?);
        }
        for (i, (token, _)) in entries.iter().enumerate() {
            if entries[..i].iter().any(|(t, _)| t == token) {
                return Err(format!(
                    "token {} is listed twice (entries are counted across --tokens-file and \
                     PRODUCER_TOKENS)",
                    i + 1
                ));
            }
        }
        Ok(Self {
            entries: Arc::new(entries),
        })
    }

    /// Whether tokens are checked at all.
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller behind an `authorization` value (`Bearer <token>`), or behind a bare token
    /// (the `access_token` query parameter). With tokens off, anyone.
    pub fn caller(
        &self,
        authorization: Option<&[u8]>,
        access_token: Option<&str>,
    ) -> Result<Caller, AuthError> {
        if !self.enabled() {
            return Ok(Caller::anyone());
        }
        let token = match (authorization, access_token) {
            (Some(value), _) => bearer(value).ok_or(AuthError::Invalid)?,
            (None, Some(token)) => token.as_bytes(),
            (None, None) => return Err(AuthError::Missing),
        };
        // Every entry is compared, so the time taken does not say which one matched.
        let mut found = None;
        for (known, caller) in self.entries.iter() {
            if bool::from(known.as_slice().ct_eq(token)) {
                found = Some(caller);
            }
        }
        found.cloned().ok_or(AuthError::Invalid)
    }

    /// [`Tokens::caller`], then the scope.
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        access_token: Option<&str>,
        scope: Scope,
    ) -> Result<Caller, AuthError> {
        let caller = self.caller(authorization, access_token)?;
        caller.may(scope)?;
        Ok(caller)
    }
}

/// The token of `Bearer <token>` (the scheme case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, token) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token.as_bytes())
}

/// Lines `<token> <scope>[,<scope>…]`; `#` starts a comment; `;` also ends an entry (so the
/// environment variable can hold several on one line).
fn parse(text: &str) -> Result<Vec<(Vec<u8>, Caller)>, String> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        for entry in line.split(';') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let at = format!("line {}", n + 1);
            let mut words = entry.split_whitespace();
            let token = words.next().unwrap_or_default();
            let scopes = words.next().ok_or_else(|| {
                format!(
                    "{at}: a token needs its scopes after it, e.g. `<token> publish,read` \
                     (scopes: publish, read, metrics)"
                )
            })?;
            if words.next().is_some() {
                return Err(format!(
                    "{at}: expected `<token> <scope>[,<scope>…]` (scopes are comma-separated, \
                     without spaces)"
                ));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "{at}: the token is {} characters; at least {MIN_TOKEN_LEN} are required \
                     (e.g. `openssl rand -hex 24`)",
                    token.len()
                ));
            }
            let scopes = scopes
                .split(',')
                .map(|s| {
                    Scope::parse(s.trim()).ok_or_else(|| {
                        format!("{at}: unknown scope {s:?} (scopes: publish, read, metrics)")
                    })
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            entries.push((token.as_bytes().to_vec(), Caller { scopes }));
        }
    }
    Ok(entries)
}

/// The scope a gRPC method needs, by its path; `None`: open to anyone (health, so probes and
/// load balancers need no secret; reflection, since the schema is the public contract).
pub fn grpc_scope(path: &str) -> Option<Scope> {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        return None;
    }
    if path == "/pushpull.v1.ProducerService/Publish" {
        return Some(Scope::Publish);
    }
    // Subscribe, Poll, the webhook service, and anything unknown: reading, at least.
    Some(Scope::Read)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "publisher-token-0123456789";
    const R: &str = "reader-token-0123456789";

    fn tokens() -> Tokens {
        Tokens::load(
            None,
            Some(&format!(
                "# comment\n{P} publish,read\n\n{R} read # trailing comment\n"
            )),
        )
        .unwrap()
    }

    #[test]
    fn off_without_tokens_allows_everything() {
        let t = Tokens::default();
        assert!(!t.enabled());
        assert!(t.check(None, None, Scope::Publish).is_ok());
    }

    #[test]
    fn a_token_gives_its_scopes_and_no_others() {
        let t = tokens();
        let bearer_p = format!("Bearer {P}");
        let bearer_r = format!("bearer {R}");
        assert!(
            t.check(Some(bearer_p.as_bytes()), None, Scope::Publish)
                .is_ok()
        );
        assert!(
            t.check(Some(bearer_r.as_bytes()), None, Scope::Read)
                .is_ok()
        );
        assert_eq!(
            t.check(Some(bearer_r.as_bytes()), None, Scope::Publish),
            Err(AuthError::ScopeMissing {
                scope: Scope::Publish
            })
        );
        assert_eq!(
            t.check(Some(bearer_p.as_bytes()), None, Scope::Metrics),
            Err(AuthError::ScopeMissing {
                scope: Scope::Metrics
            })
        );
        assert!(t.check(None, Some(R), Scope::Read).is_ok());
    }

    #[test]
    fn missing_unknown_and_malformed_are_refused() {
        let t = tokens();
        assert_eq!(t.check(None, None, Scope::Read), Err(AuthError::Missing));
        let wrong = format!("Bearer {P}x");
        assert_eq!(
            t.check(Some(wrong.as_bytes()), None, Scope::Read),
            Err(AuthError::Invalid)
        );
        let basic = format!("Basic {P}");
        assert_eq!(
            t.check(Some(basic.as_bytes()), None, Scope::Read),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            t.check(Some(b"Bearer "), None, Scope::Read),
            Err(AuthError::Invalid)
        );
        // A prefix of a known token is not that token.
        assert_eq!(
            t.check(None, Some(&P[..P.len() - 1]), Scope::Read),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn bad_token_files_are_refused_with_the_line() {
        for (text, needle) in [
            ("short read", "at least 16"),
            ("abcdefghijklmnopq", "needs its scopes"),
            ("abcdefghijklmnopq write", "unknown scope \"write\""),
            ("abcdefghijklmnopq read, publish", "comma-separated"),
            ("\n\nabcdefghijklmnopq reed", "line 3"),
            (
                "abcdefghijklmnopq read\nabcdefghijklmnopq publish",
                "listed twice",
            ),
        ] {
            let err = Tokens::load(None, Some(text)).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn entries_may_share_a_line_and_debug_hides_tokens() {
        let t = Tokens::load(None, Some(&format!("{P} publish; {R} read"))).unwrap();
        assert_eq!(t.len(), 2);
        assert!(!format!("{t:?}").contains(P));
    }

    #[test]
    fn grpc_paths_map_to_scopes() {
        assert_eq!(grpc_scope("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            grpc_scope("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            None
        );
        assert_eq!(
            grpc_scope("/pushpull.v1.ProducerService/Publish"),
            Some(Scope::Publish)
        );
        assert_eq!(
            grpc_scope("/pushpull.v1.ProducerService/Subscribe"),
            Some(Scope::Read)
        );
        assert_eq!(
            grpc_scope("/pushpull.v1.WebhookService/CreateWebhook"),
            Some(Scope::Read)
        );
        assert_eq!(grpc_scope("/unknown.Service/Method"), Some(Scope::Read));
    }
}
