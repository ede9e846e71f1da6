//! Per-session publish and play authorization.
//!
//! A bearer token (gRPC `authorization: Bearer …` metadata; HTTP the same
//! header or `?token=`) is accepted if it is either one of the configured
//! static tokens, each for a role and a session (or `*`), or an HMAC-signed
//! token `lsv1:<role>:<session>:<expiry>:<hex HMAC-SHA256>` made with the
//! configured secret (`--mint-token` prints one). Checks run before any
//! session lookup, so a refusal never tells whether a session exists.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::ConfigError;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Publish,
    Play,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Publish => "publish",
            Access::Play => "play",
        }
    }
}

/// A refusal: `Unauthenticated` (no or bad token: 401 / UNAUTHENTICATED) or
/// `Forbidden` (a good token, not for this: 403 / PERMISSION_DENIED).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required")]
    Missing,
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
    #[error("the token does not allow this")]
    Forbidden,
}

#[derive(Clone, Debug)]
struct StaticToken {
    token: Vec<u8>,
    role: Option<Access>,
    session: String,
}

/// The configured authorization; absent when auth is off.
#[derive(Clone, Debug)]
pub struct Auth {
    tokens: Vec<StaticToken>,
    secret: Option<Vec<u8>>,
}

const PREFIX: &str = "lsv1";
/// Shortest `--auth-secret` accepted.
pub const MIN_SECRET_LEN: usize = 16;
/// Shortest static token (the TOKEN of `--auth-token ROLE:SESSION:TOKEN`).
pub const MIN_TOKEN_LEN: usize = 8;

impl Auth {
    /// From `--auth-token ROLE:SESSION:TOKEN` entries (ROLE publish, play or
    /// any; SESSION an id or `*`) and `--auth-secret`. `Ok(None)` when
    /// neither is given.
    pub fn new(tokens: &[String], secret: Option<&str>) -> Result<Option<Auth>, String> {
        if tokens.is_empty() && secret.is_none() {
            return Ok(None);
        }
        let mut parsed = Vec::new();
        for t in tokens {
            let mut parts = t.splitn(3, ':');
            let (Some(role), Some(session), Some(token)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("{t:?} is not ROLE:SESSION:TOKEN"));
            };
            let role_text = role;
            let role = match role {
                "publish" => Some(Access::Publish),
                "play" => Some(Access::Play),
                "any" => None,
                other => return Err(format!("role {other:?} is not publish, play or any")),
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "{role_text}:{session}:…: the token must be at least {MIN_TOKEN_LEN} characters"
                ));
            }
            let session = if session == "*" {
                session.to_string()
            } else {
                crate::ids::parse_session_id(session)
                    .map_err(|e| format!("{role_text}:{session}:…: invalid session: {e}"))?
            };
            parsed.push(StaticToken {
                token: token.as_bytes().to_vec(),
                role,
                session,
            });
        }
        if let Some(s) = secret {
            if s.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "the auth secret must be at least {MIN_SECRET_LEN} characters"
                ));
            }
        }
        Ok(Some(Auth {
            tokens: parsed,
            secret: secret.map(|s| s.as_bytes().to_vec()),
        }))
    }

    /// May `token` do `access` on `session` at `now` (Unix seconds)?
    /// `session` is a decoded id (from [`crate::ids::parse_session_id`]);
    /// `*` asks for a token valid for every session. A token for a session
    /// is good for its renditions (`cam1` for `cam1~360p`).
    pub fn check(
        &self,
        token: Option<&str>,
        session: &str,
        access: Access,
        now: u64,
    ) -> Result<(), AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        if let Some(t) = self
            .tokens
            .iter()
            .find(|t| bool::from(t.token.as_slice().ct_eq(token.as_bytes())))
        {
            let role_ok = t.role.is_none_or(|r| r == access);
            let session_ok = t.session == "*"
                || t.session == session
                || t.session == crate::ids::session_of(session);
            return if role_ok && session_ok {
                Ok(())
            } else {
                Err(AuthError::Forbidden)
            };
        }
        let Some(secret) = &self.secret else {
            return Err(AuthError::Invalid("unknown token"));
        };
        let (role, tok_session, expiry) = verify_signed(secret, token)?;
        if expiry < now {
            return Err(AuthError::Invalid("expired"));
        }
        let session_ok = tok_session == "*"
            || tok_session == session
            || tok_session == crate::ids::session_of(session);
        if role != access || !session_ok {
            return Err(AuthError::Forbidden);
        }
        Ok(())
    }
}

fn mac(secret: &[u8], payload: &str) -> Hmac<Sha256> {
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(payload.as_bytes());
    m
}

/// A signed token for `session` (or `*`), valid until `expiry` (Unix s).
pub fn sign(secret: &str, access: Access, session: &str, expiry: u64) -> String {
    let payload = format!("{PREFIX}:{}:{session}:{expiry}", access.as_str());
    let tag = mac(secret.as_bytes(), &payload).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("{payload}:{hex}")
}

fn verify_signed(secret: &[u8], token: &str) -> Result<(Access, String, u64), AuthError> {
    let (payload, hex) = token
        .rsplit_once(':')
        .ok_or(AuthError::Invalid("unknown token"))?;
    let mut parts = payload.split(':');
    if parts.next() != Some(PREFIX) {
        return Err(AuthError::Invalid("unknown token"));
    }
    let role = match parts.next() {
        Some("publish") => Access::Publish,
        Some("play") => Access::Play,
        _ => return Err(AuthError::Invalid("malformed")),
    };
    let session = parts.next().ok_or(AuthError::Invalid("malformed"))?;
    // The session a token names is read like every other id: an encoded
    // one stands for what it decodes to, an invalid one for nothing.
    let session = if session == "*" {
        session.to_string()
    } else {
        crate::ids::parse_session_id(session).map_err(|_| AuthError::Invalid("malformed"))?
    };
    let expiry: u64 = parts
        .next()
        .and_then(|e| e.parse().ok())
        .ok_or(AuthError::Invalid("malformed"))?;
    if parts.next().is_some() || hex.len() != 64 {
        return Err(AuthError::Invalid("malformed"));
    }
    let tag: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| AuthError::Invalid("malformed"))?;
    mac(secret, payload)
        .verify_slice(&tag)
        .map_err(|_| AuthError::Invalid("bad signature"))?;
    Ok((role, session, expiry))
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Access control's part of the configuration: `auth-token` (a list of
/// `ROLE:SESSION:TOKEN`, or one string; commas separate entries too, as in
/// `LIVESLICE_AUTH_TOKENS`) and `auth-secret`. Both off by default. It
/// prints (`Debug`, and `Serialize` for `--print-config`) with the secrets
/// hidden.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(
        rename = "auth-token",
        deserialize_with = "token_list",
        serialize_with = "hidden_tokens",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tokens: Vec<String>,
    #[serde(
        rename = "auth-secret",
        serialize_with = "hidden_secret",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret: Option<String>,
}

impl AuthConfig {
    /// The authorization this asks for (`None`: auth off).
    pub fn build(&self) -> Result<Option<Auth>, String> {
        Auth::new(&self.tokens, self.secret.as_deref())
    }

    /// Checks the secret's length and every token, naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_SECRET_LEN)
        {
            return Err(ConfigError::new(
                "auth-secret",
                format!(
                    "must be at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`)"
                ),
            ));
        }
        self.build()
            .map(drop)
            .map_err(|reason| ConfigError::new("auth-token", reason))
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &shown_tokens(&self.tokens))
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// `auth-token` in a file: a string or a list of strings, each split at
/// commas as the flag and the environment variable are.
fn token_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match <OneOrMany as serde::Deserialize>::deserialize(d) {
        Ok(OneOrMany::One(s)) => vec![s],
        Ok(OneOrMany::Many(v)) => v,
        Err(_) => {
            return Err(serde::de::Error::custom(
                "expected ROLE:SESSION:TOKEN or a list of them (strings)",
            ))
        }
    };
    Ok(items
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::to_string)
        .collect())
}

/// Static tokens as `ROLE:SESSION:<hidden>`.
fn shown_tokens(tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .map(|t| {
            let mut p = t.splitn(3, ':');
            let (role, session) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
            format!("{role}:{session}:<hidden>")
        })
        .collect()
}

fn hidden_tokens<S: serde::Serializer>(tokens: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(shown_tokens(tokens))
}

fn hidden_secret<S: serde::Serializer>(_: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<hidden>")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef-secret";

    #[test]
    fn static_tokens_by_role_and_session() {
        let a = Auth::new(
            &[
                "publish:cam1:pub-key-1".into(),
                "play:*:viewer-key".into(),
                "any:x:all-access".into(),
            ],
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            a.check(Some("pub-key-1"), "cam1", Access::Publish, 0),
            Ok(())
        );
        assert_eq!(
            a.check(Some("pub-key-1"), "cam2", Access::Publish, 0),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            a.check(Some("pub-key-1"), "cam1", Access::Play, 0),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            a.check(Some("viewer-key"), "anything", Access::Play, 0),
            Ok(())
        );
        assert_eq!(a.check(Some("all-access"), "x", Access::Publish, 0), Ok(()));
        assert_eq!(a.check(None, "x", Access::Play, 0), Err(AuthError::Missing));
        assert!(matches!(
            a.check(Some("nope-nope"), "x", Access::Play, 0),
            Err(AuthError::Invalid(_))
        ));
        assert!(Auth::new(&["bad".into()], None).is_err());
        // Sessions are ids as everywhere else: decoded, and refused when
        // they can never be valid.
        for bad in [
            "play:../x:viewer-key",
            "play:%2e%2e:viewer-key",
            "play:a%2531:viewer-key",
        ] {
            let e = Auth::new(&[bad.into()], None).unwrap_err();
            assert!(e.contains("invalid session"), "{bad}: {e}");
        }
        let enc = Auth::new(&["play:cam%31:viewer-key".into()], None)
            .unwrap()
            .unwrap();
        assert_eq!(
            enc.check(Some("viewer-key"), "cam1", Access::Play, 0),
            Ok(())
        );
        assert_eq!(
            enc.check(Some("viewer-key"), "cam%31", Access::Play, 0),
            Err(AuthError::Forbidden)
        );
        assert!(Auth::new(&["play:*:short".into()], None).is_err());
        assert!(Auth::new(&[], None).unwrap().is_none());
    }

    #[test]
    fn signed_tokens() {
        let a = Auth::new(&[], Some(SECRET)).unwrap().unwrap();
        let t = sign(SECRET, Access::Play, "cam1", 1000);
        assert_eq!(a.check(Some(&t), "cam1", Access::Play, 999), Ok(()));
        assert_eq!(
            a.check(Some(&t), "cam1", Access::Play, 1001),
            Err(AuthError::Invalid("expired"))
        );
        assert_eq!(
            a.check(Some(&t), "cam2", Access::Play, 0),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            a.check(Some(&t), "cam1", Access::Publish, 0),
            Err(AuthError::Forbidden)
        );
        // A token's session is decoded like any id.
        let enc = sign(SECRET, Access::Play, "cam%31", 1000);
        assert_eq!(a.check(Some(&enc), "cam1", Access::Play, 0), Ok(()));
        let bad = sign(SECRET, Access::Play, "%2e%2e", 1000);
        assert!(matches!(
            a.check(Some(&bad), "..", Access::Play, 0),
            Err(AuthError::Invalid(_))
        ));
        let any = sign(SECRET, Access::Publish, "*", 1000);
        assert_eq!(a.check(Some(&any), "whatever", Access::Publish, 0), Ok(()));
        // Tampering: another session, another expiry, another secret.
        let forged = t.replace(":cam1:", ":cam2:");
        assert_eq!(
            a.check(Some(&forged), "cam2", Access::Play, 0),
            Err(AuthError::Invalid("bad signature"))
        );
        let longer = t.replace(":1000:", ":9999:");
        assert_eq!(
            a.check(Some(&longer), "cam1", Access::Play, 0),
            Err(AuthError::Invalid("bad signature"))
        );
        let other = sign("another-secret-0123", Access::Play, "cam1", 1000);
        assert_eq!(
            a.check(Some(&other), "cam1", Access::Play, 0),
            Err(AuthError::Invalid("bad signature"))
        );
        for junk in [
            "lsv1",
            "lsv1:play",
            "lsv1:play:a:b:c",
            "lsv1:x:a:1:00",
            ":::::",
            "lsv1:play:a:1:zz",
        ] {
            assert!(
                matches!(
                    a.check(Some(junk), "a", Access::Play, 0),
                    Err(AuthError::Invalid(_))
                ),
                "{junk}"
            );
        }
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
