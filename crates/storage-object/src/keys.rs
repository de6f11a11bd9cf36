//! FTP paths to object keys and back.
//!
//! Every key ferroftp touches lies inside the configured prefix. A file `/a/b c.txt` is the
//! key `<prefix>a/b c.txt`; a directory `/a` is the common prefix `<prefix>a/`, made visible
//! when empty by a zero-byte marker object `<prefix>a/`. The hidden resume state of
//! interrupted uploads lives under `<prefix>.ferroftp-partial/`, which no FTP path can name.
//!
//! Two kinds of key are used: the *object path*, relative to the prefix (what OpenDAL, whose
//! root is the prefix, takes), and the *full key* (prefix included), for the S3 requests
//! made directly ([`crate::multipart`]).

use ferroftp_backend::{StorageError, StorageErrorKind, VirtualPath};

/// The first segment reserved for hidden state. Names starting with it are refused, so no
/// client can read, list, overwrite or delete the resume state of an upload.
pub(crate) const HIDDEN_SEGMENT: &str = ".ferroftp-partial";

/// The keys of one bucket prefix.
#[derive(Clone, Debug)]
pub(crate) struct KeySpace {
    /// The prefix, empty or ending with one `/`, never starting with one.
    prefix: String,
}

impl KeySpace {
    /// `prefix` as configured: leading and trailing slashes are normalised away
    /// (`"/tenants/acme"` and `"tenants/acme/"` are the same).
    pub(crate) fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        Self { prefix }
    }

    /// The prefix (empty, or ending with `/`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full key of a full object path.
    pub(crate) fn full(&self, object_path: &str) -> String {
        format!("{}{object_path}", self.prefix)
    }

    /// The object path of a full key inside the prefix.
    pub(crate) fn relative<'key>(&self, full_key: &'key str) -> Option<&'key str> {
        full_key.strip_prefix(&self.prefix)
    }
}

/// The object path of a file: `/a/b` is `a/b`. The root is not a file; a path through the
/// hidden segment is refused.
pub(crate) fn file_path(path: &VirtualPath) -> Result<String, StorageError> {
    if path.is_root() {
        return Err(StorageError::new(
            StorageErrorKind::IsADirectory,
            "the root is a directory",
        ));
    }
    check_visible(path)?;
    Ok(path.relative_str().to_owned())
}

/// The object path of a directory, with its trailing `/`: `/a` is `a/`, the root is `/`
/// (OpenDAL's name for its root).
pub(crate) fn dir_path(path: &VirtualPath) -> Result<String, StorageError> {
    if path.is_root() {
        return Ok("/".to_owned());
    }
    check_visible(path)?;
    Ok(format!("{}/", path.relative_str()))
}

/// The same directory as a key prefix: `a/` for `/a`, empty for the root.
pub(crate) fn dir_prefix(path: &VirtualPath) -> Result<String, StorageError> {
    if path.is_root() {
        return Ok(String::new());
    }
    check_visible(path)?;
    Ok(format!("{}/", path.relative_str()))
}

/// Where the tail of an interrupted upload of `object_path` is kept: the bytes after its
/// last complete part, `.ferroftp-partial/<object path>`. Mirroring the path lets RMD drop
/// a directory's hidden state with one prefix.
pub(crate) fn tail_path(object_path: &str) -> String {
    format!("{HIDDEN_SEGMENT}/{object_path}")
}

/// Whether a name in a listing is the hidden segment (never shown).
pub(crate) fn is_hidden_name(name: &str) -> bool {
    name.starts_with(HIDDEN_SEGMENT)
}

fn check_visible(path: &VirtualPath) -> Result<(), StorageError> {
    match path.segments().next() {
        Some(first) if is_hidden_name(first) => Err(StorageError::new(
            StorageErrorKind::InvalidName,
            format!("{path}: names starting with {HIDDEN_SEGMENT} are reserved"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> VirtualPath {
        VirtualPath::root().resolve(text).unwrap()
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(KeySpace::new("").prefix(), "");
        assert_eq!(KeySpace::new("/").prefix(), "");
        assert_eq!(KeySpace::new("tenants/acme").prefix(), "tenants/acme/");
        assert_eq!(KeySpace::new("/tenants/acme/").prefix(), "tenants/acme/");
        let keys = KeySpace::new("t/");
        assert_eq!(keys.full("a/b c+%é"), "t/a/b c+%é");
        assert_eq!(keys.relative("t/a/b"), Some("a/b"));
        assert_eq!(keys.relative("u/a"), None);
    }

    #[test]
    fn paths_map_to_object_paths() {
        assert_eq!(file_path(&path("/a/b c.txt")).unwrap(), "a/b c.txt");
        assert_eq!(dir_path(&path("/a")).unwrap(), "a/");
        assert_eq!(dir_path(&VirtualPath::root()).unwrap(), "/");
        assert_eq!(dir_prefix(&VirtualPath::root()).unwrap(), "");
        assert_eq!(dir_prefix(&path("/a/b")).unwrap(), "a/b/");
        assert_eq!(tail_path("a/b"), ".ferroftp-partial/a/b");
        let root = file_path(&VirtualPath::root()).unwrap_err();
        assert_eq!(root.kind, StorageErrorKind::IsADirectory);
    }

    #[test]
    fn the_hidden_segment_is_refused() {
        for text in [
            "/.ferroftp-partial",
            "/.ferroftp-partial/a",
            "/.ferroftp-partialx",
        ] {
            let error = file_path(&path(text)).unwrap_err();
            assert_eq!(error.kind, StorageErrorKind::InvalidName, "{text}");
            assert!(dir_path(&path(text)).is_err());
        }
        // Only as the first segment: deeper, it is an ordinary name.
        assert!(file_path(&path("/a/.ferroftp-partial")).is_ok());
    }
}
