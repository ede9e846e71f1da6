//! The one error type of this crate: a message naming the file, where in
//! it (byte offset, sample, box) and what is wrong, with the cause's text
//! appended when there is one.

/// Why a file cannot be read or packaged. Its text names the file and the
/// place in it; the CLI and the job workers show it as it is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub String);

impl FileError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

pub type Result<T, E = FileError> = std::result::Result<T, E>;

/// `return Err(FileError)` with a formatted message.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::FileError::new(format!($($arg)*)))
    };
}
pub(crate) use bail;

/// Adds what was being done to an error (or turns a `None` into one).
pub trait Context<T> {
    fn with_context<C: std::fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
    fn context<C: std::fmt::Display>(self, c: C) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn with_context<C: std::fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| FileError(format!("{}: {e}", f())))
    }
    fn context<C: std::fmt::Display>(self, c: C) -> Result<T> {
        self.map_err(|e| FileError(format!("{c}: {e}")))
    }
}

impl<T> Context<T> for Option<T> {
    fn with_context<C: std::fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| FileError(f().to_string()))
    }
    fn context<C: std::fmt::Display>(self, c: C) -> Result<T> {
        self.ok_or_else(|| FileError(c.to_string()))
    }
}
