//! Where a job reads and writes: `s3://BUCKET/KEY` through `object_store`
//! (the recording's S3 client, with `--job-endpoint`/`--job-region`) or
//! `file:///PATH` within the workers' `--job-files` directory.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;

use super::JobConfig;

/// A job URL, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `s3://BUCKET/KEY` (KEY: an object, or a prefix for outputs).
    S3 { bucket: String, key: String },
    /// `file:///PATH` (absolute, no `..`).
    File(PathBuf),
}

impl Location {
    /// `s3://BUCKET[/KEY]` or `file:///PATH`; names what is wrong.
    pub fn parse(url: &str) -> Result<Location, String> {
        Location::parse_named(url, "KEY", "PATH", "a job URL")
    }

    /// As [`Location::parse`], its errors naming the key `key` (e.g.
    /// `PREFIX`), the path `path` (e.g. `DIR`) and the URL `what`.
    pub fn parse_named(url: &str, key: &str, path: &str, what: &str) -> Result<Location, String> {
        let forms = format!("s3://BUCKET/{key} or file:///{path}");
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, object) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{url:?} names no bucket (s3://BUCKET/{key})"));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                key: object.trim_matches('/').to_string(),
            });
        }
        if let Some(p) = url.strip_prefix("file://") {
            let p = Path::new(p);
            if !p.is_absolute() {
                return Err(format!(
                    "{url:?} is not an absolute file URL (file:///{path})"
                ));
            }
            if p.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(format!("{url:?}: `..` is not allowed in {what}"));
            }
            return Ok(Location::File(p.to_path_buf()));
        }
        if url.is_empty() {
            return Err(format!("missing ({forms})"));
        }
        Err(format!("{url:?}: use {forms}"))
    }
}

/// An opened place: a store and the key within it.
pub struct Place {
    pub store: Arc<dyn ObjectStore>,
    /// The object (a source) or prefix (an output); may be empty.
    pub key: String,
    /// Objects get a `Content-Type` (S3; local files have none).
    pub content_types: bool,
}

impl Place {
    /// The object at `name` under the key (a prefix).
    pub fn path(&self, name: &str) -> object_store::path::Path {
        if self.key.is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{}/{name}", self.key))
        }
    }
}

/// The local path of a `file://` location, checked to lie within
/// `--job-files`.
pub fn local_path(path: &Path, config: &JobConfig) -> Result<PathBuf, String> {
    let Some(root) = &config.job_files else {
        return Err(format!(
            "file://{} : file:// job URLs need --job-files DIR on the workers (the directory \
             they may read and write); use s3:// URLs, or start the workers with --job-files",
            path.display()
        ));
    };
    if !path.starts_with(root) {
        return Err(format!(
            "file://{} lies outside the workers' --job-files directory {}",
            path.display(),
            root.display()
        ));
    }
    Ok(path.to_path_buf())
}

/// Opens a location as a store (S3 with the configured endpoint and
/// region; a file location within `--job-files`, created if missing).
pub fn open(location: &Location, config: &JobConfig) -> Result<Place, String> {
    match location {
        Location::S3 { bucket, key } => {
            let store = crate::record::s3_store(
                bucket,
                config.job_endpoint.as_deref(),
                config.job_region.as_deref(),
            )?;
            Ok(Place {
                store: Arc::new(store),
                key: key.clone(),
                content_types: true,
            })
        }
        Location::File(path) => {
            let path = local_path(path, config)?;
            std::fs::create_dir_all(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&path)
                .map_err(|e| e.to_string())?;
            Ok(Place {
                store: Arc::new(store),
                key: String::new(),
                content_types: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why() {
        assert_eq!(
            Location::parse("s3://b/a/b.mp4"),
            Ok(Location::S3 {
                bucket: "b".into(),
                key: "a/b.mp4".into()
            })
        );
        assert_eq!(
            Location::parse("file:///data/in.mp4"),
            Ok(Location::File("/data/in.mp4".into()))
        );
        assert!(Location::parse("s3:///k")
            .unwrap_err()
            .contains("no bucket"));
        assert!(Location::parse("file://x")
            .unwrap_err()
            .contains("absolute"));
        assert!(Location::parse("file:///data/../etc")
            .unwrap_err()
            .contains(".."));
        assert!(Location::parse("https://x").unwrap_err().contains("s3://"));
    }

    #[test]
    fn file_urls_stay_within_job_files() {
        let none = JobConfig::default();
        assert!(local_path(Path::new("/data/a"), &none)
            .unwrap_err()
            .contains("--job-files"));
        let c = JobConfig {
            job_files: Some("/data".into()),
            ..Default::default()
        };
        assert!(local_path(Path::new("/data/a/b.mp4"), &c).is_ok());
        assert!(local_path(Path::new("/database/x"), &c)
            .unwrap_err()
            .contains("outside"));
    }
}
