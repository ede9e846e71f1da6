//! Session ids: they end up in URLs and file names, so only a safe charset
//! is accepted.

pub const MAX_SESSION_ID_LEN: usize = 128;

/// Checks a session id: 1..=128 bytes of `[A-Za-z0-9._-]`, not starting
/// with `.` (no hidden files, no `..`).
pub fn validate_session_id(id: &str) -> Result<(), String> {
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
    use super::validate_session_id;

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
        }
        assert!(validate_session_id(&"x".repeat(128)).is_ok());
    }
}
