//! `VirtualPath`: the only path type the protocol and the storage interface use.
//!
//! A virtual path is absolute, `/`-separated and normalised: no empty, `.` or `..` segments, no
//! NUL byte. It is built only by [`VirtualPath::root`] and [`VirtualPath::resolve`], which refuse
//! anything that would climb above `/`, so holding a `VirtualPath` is proof that it stays inside
//! the root it is later joined to. Storage backends map it onto their own namespace (a
//! directory, a bucket prefix) and never see a client's raw string.

use std::fmt;

use crate::reply::{Reply, ReplyCode};

/// Why a client-supplied path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// `..` would climb above the root (the user's home).
    #[error("path climbs above the root")]
    EscapesRoot,
    /// The path contains a NUL byte, which no filesystem accepts.
    #[error("path contains a NUL byte")]
    ContainsNul,
    /// An empty path where a name was required.
    #[error("empty path")]
    Empty,
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("path too long")]
    TooLong,
}

impl PathError {
    /// RFC 959 §4.2: 553 "Requested action not taken. File name not allowed" is the reply for
    /// a name the server refuses; 550 for a path that points outside what the user may see.
    pub fn reply(&self) -> Reply {
        match self {
            Self::EscapesRoot => Reply::new(ReplyCode::FILE_UNAVAILABLE, "Path outside your home"),
            Self::ContainsNul => Reply::new(ReplyCode::NAME_NOT_ALLOWED, "File name not allowed"),
            Self::Empty => Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Path required"),
            Self::TooLong => Reply::new(ReplyCode::NAME_NOT_ALLOWED, "Path too long"),
        }
    }
}

/// Longest path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// An absolute, normalised, `/`-separated path that cannot name anything above `/`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualPath(String);

impl VirtualPath {
    /// The root, `/`.
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    /// Resolves `input` (absolute, or relative to `self`) into a new path.
    ///
    /// `.` and empty segments are dropped; `..` removes the previous segment and is refused
    /// with [`PathError::EscapesRoot`] when there is none: a chrooted user asking for
    /// `../../etc/passwd` gets an error, not a silently clamped path.
    pub fn resolve(&self, input: &str) -> Result<Self, PathError> {
        if input.contains('\0') {
            return Err(PathError::ContainsNul);
        }
        if input.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let mut segments: Vec<&str> = if input.starts_with('/') {
            Vec::new()
        } else {
            self.segments().collect()
        };
        for segment in input.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err(PathError::EscapesRoot);
                    }
                }
                name => segments.push(name),
            }
        }
        let joined = Self::from_segments(&segments);
        if joined.0.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        Ok(joined)
    }

    /// `other`, taken relative to `self`: maps a path a chrooted user sees onto the storage
    /// namespace (`/home/alice` + `/docs/a.txt` = `/home/alice/docs/a.txt`).
    pub fn join(&self, other: &Self) -> Self {
        if self.is_root() {
            return other.clone();
        }
        if other.is_root() {
            return self.clone();
        }
        Self(format!("{}{}", self.0, other.0))
    }

    /// The inverse of [`join`](Self::join): `self` seen from inside `base`, or `None` when
    /// `self` is not inside `base`.
    pub fn strip_base(&self, base: &Self) -> Option<Self> {
        if base.is_root() {
            return Some(self.clone());
        }
        let rest = self.0.strip_prefix(&base.0)?;
        if rest.is_empty() {
            Some(Self::root())
        } else if rest.starts_with('/') {
            Some(Self(rest.to_owned()))
        } else {
            None
        }
    }

    /// The containing directory; the root is its own parent (RFC 959 CDUP at the top stays).
    pub fn parent(&self) -> Self {
        match self.0.rfind('/') {
            Some(0) | None => Self::root(),
            Some(index) => Self(self.0[..index].to_owned()),
        }
    }

    /// The last segment, or `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            self.0.rsplit('/').next()
        }
    }

    /// `true` for `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The segments from the root down, none of them empty, `.` or `..`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|segment| !segment.is_empty())
    }

    /// The path as a string, always starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path without its leading `/`: `""` for the root, handy for relative opens.
    pub fn relative_str(&self) -> &str {
        &self.0[1..]
    }

    fn from_segments(segments: &[&str]) -> Self {
        if segments.is_empty() {
            return Self::root();
        }
        let mut path = String::with_capacity(segments.iter().map(|s| s.len() + 1).sum());
        for segment in segments {
            path.push('/');
            path.push_str(segment);
        }
        Self(path)
    }
}

impl fmt::Display for VirtualPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl fmt::Debug for VirtualPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path(s: &str) -> VirtualPath {
        VirtualPath::root().resolve(s).unwrap()
    }

    #[test]
    fn resolves_relative_and_absolute() {
        let cwd = path("/a/b");
        assert_eq!(cwd.resolve("c").unwrap().as_str(), "/a/b/c");
        assert_eq!(cwd.resolve("/x//y/").unwrap().as_str(), "/x/y");
        assert_eq!(cwd.resolve("./c/../d").unwrap().as_str(), "/a/b/d");
        assert_eq!(cwd.resolve("..").unwrap().as_str(), "/a");
        assert_eq!(cwd.resolve("../..").unwrap().as_str(), "/");
        assert_eq!(cwd.resolve("").unwrap().as_str(), "/a/b");
    }

    #[test]
    fn refuses_climbing_above_root() {
        let cwd = path("/a");
        assert_eq!(cwd.resolve("../../etc/passwd"), Err(PathError::EscapesRoot));
        assert_eq!(cwd.resolve("/../etc"), Err(PathError::EscapesRoot));
        assert_eq!(cwd.resolve("x\0y"), Err(PathError::ContainsNul));
    }

    #[test]
    fn encoded_dots_are_plain_names() {
        // FTP has no URL encoding: "%2e%2e" is a file name, not "..".
        assert_eq!(path("/a").resolve("%2e%2e").unwrap().as_str(), "/a/%2e%2e");
    }

    #[test]
    fn join_and_strip_base_are_inverse() {
        let home = path("/home/alice");
        let inside = path("/docs/a.txt");
        let full = home.join(&inside);
        assert_eq!(full.as_str(), "/home/alice/docs/a.txt");
        assert_eq!(full.strip_base(&home), Some(inside));
        assert_eq!(path("/home/alicex").strip_base(&home), None);
        assert_eq!(home.strip_base(&home), Some(VirtualPath::root()));
    }

    #[test]
    fn parent_and_file_name() {
        assert_eq!(path("/a/b").parent().as_str(), "/a");
        assert_eq!(path("/a").parent().as_str(), "/");
        assert_eq!(VirtualPath::root().parent().as_str(), "/");
        assert_eq!(path("/a/b").file_name(), Some("b"));
        assert_eq!(VirtualPath::root().file_name(), None);
    }

    proptest! {
        #[test]
        fn resolved_paths_never_escape_and_are_normal(
            base in "(/[a-z]{1,3}){0,4}",
            input in "[a-z./]{0,24}",
        ) {
            let base = VirtualPath::root().resolve(&base).unwrap();
            if let Ok(resolved) = base.resolve(&input) {
                let text = resolved.as_str();
                prop_assert!(text.starts_with('/'));
                prop_assert!(!text.contains("//"));
                prop_assert!(resolved.segments().all(|s| s != "." && s != ".."));
                prop_assert!(text == "/" || !text.ends_with('/'));
                // Resolving again is the identity: the representation is canonical.
                prop_assert_eq!(VirtualPath::root().resolve(text).unwrap(), resolved.clone());
                // Joined under any home, the result stays inside that home.
                let home = VirtualPath::root().resolve("/home/u").unwrap();
                prop_assert!(home.join(&resolved).strip_base(&home).is_some());
            }
        }
    }
}
