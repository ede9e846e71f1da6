//! Session ids: they end up in URLs and file names, so only a safe charset
//! is accepted.
//!
//! [`parse_session_id`] is the one way an id enters the server: HTTP paths,
//! the HTTP authorization check, gRPC `session_id`, `--demo`,
//! `--mint-token` and static `--auth-token` entries all go through it, so
//! every layer agrees on which session a string names.

pub const MAX_SESSION_ID_LEN: usize = 128;

/// Longest rendition name, bytes.
pub const MAX_RENDITION_LEN: usize = 32;

/// Separates a session id from a rendition name in a rendition's own id
/// (`cam1~360p`): the one URL-unreserved character (RFC 3986 2.3) that
/// session ids do not use.
pub const RENDITION_SEPARATOR: char = '~';

/// The session a (rendition's) id belongs to: `cam1` for `cam1~360p` and
/// for `cam1`. Access control is by this id.
pub fn session_of(id: &str) -> &str {
    id.split_once(RENDITION_SEPARATOR).map_or(id, |(s, _)| s)
}

/// The rendition an id names, if it names one: `360p` for `cam1~360p`.
pub fn rendition_of(id: &str) -> Option<&str> {
    id.split_once(RENDITION_SEPARATOR).map(|(_, r)| r)
}

/// Checks a rendition name: 1..=32 bytes of `[A-Za-z0-9._-]`, not
/// starting with `.`.
pub fn validate_rendition(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("rendition name is empty".into());
    }
    if name.len() > MAX_RENDITION_LEN {
        return Err(format!(
            "rendition name is {} bytes; at most {MAX_RENDITION_LEN} are allowed",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err("rendition name must not start with '.'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "rendition name may only contain A-Z, a-z, 0-9, '.', '_' and '-' (found {c:?})"
        ));
    }
    Ok(())
}

/// The id of rendition `rendition` of session `session` (`cam1~360p`);
/// `session` itself when `rendition` is empty. Both are checked.
pub fn rendition_id(session: &str, rendition: &str) -> Result<String, String> {
    validate_session_id(session)?;
    if rendition.is_empty() {
        return Ok(session.to_string());
    }
    if rendition_of(session).is_some() {
        return Err(format!(
            "session_id {session:?} already names a rendition; give the rendition in one place"
        ));
    }
    validate_rendition(rendition)?;
    Ok(format!("{session}{RENDITION_SEPARATOR}{rendition}"))
}

/// Decodes and validates a session id as it arrives from anywhere: one
/// round of percent-decoding (`cam%31` is `cam1`; hex digits in either
/// case), then [`validate_session_id`] on the result. A string that does not
/// decode, or decodes to an invalid id (`%2e%2e` is `..`; `%2531` is `%31`,
/// which contains `%`), is refused with the reason.
pub fn parse_session_id(raw: &str) -> Result<String, String> {
    let id = if raw.contains('%') {
        percent_decode_once(raw)
            .ok_or_else(|| format!("session_id {raw:?} is not validly percent-encoded"))?
    } else {
        raw.to_string()
    };
    validate_session_id(&id).map_err(|e| {
        if id == raw {
            e
        } else {
            format!("{e} (in {id:?}, decoded from {raw:?})")
        }
    })?;
    Ok(id)
}

/// `%XX` escapes to bytes, once; `None` for a malformed escape or a result
/// that is not UTF-8. `+` stays `+` (this is a path segment, not a form).
fn percent_decode_once(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The validity rule, on an already decoded id: 1..=128 bytes of
/// `[A-Za-z0-9._-]`, not starting with `.` (no hidden files, no `..`);
/// or a rendition's id, `SESSION~RENDITION` (see [`rendition_id`]).
/// Use [`parse_session_id`] for ids from outside.
pub fn validate_session_id(id: &str) -> Result<(), String> {
    if let Some((session, rendition)) = id.split_once(RENDITION_SEPARATOR) {
        validate_session_id(session)?;
        return validate_rendition(rendition)
            .map_err(|e| format!("{e} (in session_id {id:?}: SESSION~RENDITION)"));
    }
    if id.is_empty() {
        return Err("session_id is required".into());
    }
    if id.len() > MAX_SESSION_ID_LEN {
        return Err(format!(
            "session_id is {} bytes; at most {MAX_SESSION_ID_LEN} are allowed",
            id.len()
        ));
    }
    if id.starts_with('.') {
        return Err("session_id must not start with '.'".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "session_id may only contain A-Z, a-z, 0-9, '.', '_' and '-' (found {c:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_session_id, validate_session_id};

    #[test]
    fn ids() {
        assert!(validate_session_id("cam-1.main_2").is_ok());
        for bad in [
            "",
            ".hidden",
            "..",
            "../x",
            "a/b",
            "a b",
            "a\nb",
            "é",
            &"x".repeat(129),
        ] {
            assert!(validate_session_id(bad).is_err(), "{bad:?}");
            assert!(parse_session_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_session_id(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn rendition_ids() {
        use super::{rendition_id, rendition_of, session_of};
        assert_eq!(rendition_id("cam1", "360p").as_deref(), Ok("cam1~360p"));
        assert_eq!(rendition_id("cam1", "").as_deref(), Ok("cam1"));
        assert!(validate_session_id("cam1~360p").is_ok());
        assert_eq!(parse_session_id("cam1%7E360p").as_deref(), Ok("cam1~360p"));
        assert_eq!(session_of("cam1~360p"), "cam1");
        assert_eq!(session_of("cam1"), "cam1");
        assert_eq!(rendition_of("cam1~360p"), Some("360p"));
        for bad in ["cam1~", "~360p", "cam1~3~6", "cam1~.x", "cam1~a/b"] {
            assert!(validate_session_id(bad).is_err(), "{bad:?}");
        }
        assert!(rendition_id("cam1~a", "b").is_err());
        assert!(rendition_id("cam1", "a b").is_err());
        assert!(rendition_id("cam1", &"r".repeat(33)).is_err());
    }

    #[test]
    fn encoded_ids_are_what_they_decode_to() {
        assert_eq!(parse_session_id("cam1").as_deref(), Ok("cam1"));
        assert_eq!(parse_session_id("cam%31").as_deref(), Ok("cam1"));
        assert_eq!(parse_session_id("%63%61%6D%31").as_deref(), Ok("cam1"));
        assert_eq!(parse_session_id("cam%6a").as_deref(), Ok("camj"));
        assert_eq!(parse_session_id("cam%6A").as_deref(), Ok("camj"));
        assert_eq!(parse_session_id("a%2Db").as_deref(), Ok("a-b"));
        for bad in [
            "%2e%2e",
            "%2E%2e",
            "%2e%2e%2fx",
            "..%2Fx",
            "a%2Fb",
            "cam%2531",
            "%",
            "cam%3",
            "cam%zz",
            "cam%C3%A9",
            "cam%ff",
            "a+b",
            "cam%00",
            "%2ehidden",
        ] {
            let e = parse_session_id(bad).expect_err(bad);
            assert!(e.contains("session_id"), "{bad}: {e}");
        }
        // 128 bytes once decoded is fine however long the encoding.
        assert!(parse_session_id(&"%78".repeat(128)).is_ok());
        assert!(parse_session_id(&"%78".repeat(129)).is_err());
    }
}
