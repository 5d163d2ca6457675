//! Storage paths, validated once at the boundary (PROTOCOL.md §8.1): the Store only ever sees a normalized
//! [`EntryPath`] (a file) or [`DirPath`] (a directory, ending in `/`). The types are purely syntactic: which
//! [`Scope`] a path is in is told by `scope()`, and who may reach it is the app's authorization's call.

use std::fmt;

/// Longest segment, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Longest normalized path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Why a path was refused; the text is the reason of a `400 Invalid URL: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not absolute.
    #[error("Path must start with /")]
    NotAbsolute,
    /// A segment longer than [`MAX_SEGMENT_BYTES`].
    #[error("Path segment is longer than 255 bytes")]
    SegmentTooLong,
    /// A control character (Unicode category Cc).
    #[error("Path contains a control character")]
    ControlCharacter,
    /// `..` above the root.
    #[error("Path escapes the root with ..")]
    EscapesRoot,
    /// Longer than [`MAX_PATH_BYTES`] once normalized.
    #[error("Path is longer than 4096 bytes")]
    TooLong,
    /// A directory where a file is needed.
    #[error("Path names a directory, not a file")]
    IsDirectory,
    /// A file where a directory is needed.
    #[error("Path names a file, not a directory")]
    IsFile,
}

/// The top-level area a path lies in, which authorization rules are written against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Under `/pub/`: public data.
    Public,
    /// Under `/priv/`: private data.
    Private,
    /// Anywhere else, including `/pub` and `/priv` themselves.
    Other,
}

impl Scope {
    /// The scope of path text, normalized or raw (a raw path's scope is that of its unescaped prefix).
    pub fn of(path: &str) -> Self {
        if path.starts_with("/pub/") {
            Self::Public
        } else if path.starts_with("/priv/") {
            Self::Private
        } else {
            Self::Other
        }
    }
}

/// A path normalized per §8.1 steps 1–6: absolute, no empty, `.` or `..` segments, no control
/// characters, within the length limits. Directory paths keep their trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NormalizedPath(String);

impl NormalizedPath {
    /// Normalizes an already percent-decoded path.
    pub fn parse(decoded: &str) -> Result<Self, PathError> {
        if !decoded.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        // A trailing `..` segment leaves a directory (`/a/b/..` is `/a/`); unlike the reference, a name
        // that merely ends in dots (`b..`) is a file, so normalizing twice changes nothing.
        let is_dir = matches!(decoded.rsplit('/').next(), Some("" | ".."));
        let mut segments: Vec<&str> = Vec::new();
        for segment in decoded.split('/').filter(|s| !s.is_empty()) {
            if segment.len() > MAX_SEGMENT_BYTES {
                return Err(PathError::SegmentTooLong);
            }
            if segment.chars().any(char::is_control) {
                return Err(PathError::ControlCharacter);
            }
            match segment {
                "." => {}
                ".." => {
                    segments.pop().ok_or(PathError::EscapesRoot)?;
                }
                _ => segments.push(segment),
            }
        }
        let mut path = String::with_capacity(decoded.len());
        for segment in &segments {
            path.push('/');
            path.push_str(segment);
        }
        if is_dir || path.is_empty() {
            path.push('/');
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        Ok(Self(path))
    }

    /// Whether it ends with `/`.
    pub fn is_dir(&self) -> bool {
        self.0.ends_with('/')
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Which area it lies in.
    pub fn scope(&self) -> Scope {
        Scope::of(&self.0)
    }
}

/// A normalized file path (not ending in `/`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryPath(String);

impl EntryPath {
    /// Normalizes and checks a percent-decoded file path.
    pub fn parse(decoded: &str) -> Result<Self, PathError> {
        Self::try_from(NormalizedPath::parse(decoded)?)
    }

    /// The path text, e.g. `/pub/app/file.txt`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Which area it lies in.
    pub fn scope(&self) -> Scope {
        Scope::of(&self.0)
    }

    /// The last segment, e.g. `file.txt`.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }
}

impl TryFrom<NormalizedPath> for EntryPath {
    type Error = PathError;

    fn try_from(path: NormalizedPath) -> Result<Self, PathError> {
        if path.is_dir() {
            return Err(PathError::IsDirectory);
        }
        Ok(Self(path.0))
    }
}

/// A normalized directory path, ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirPath(String);

impl DirPath {
    /// Normalizes and checks a percent-decoded directory path.
    pub fn parse(decoded: &str) -> Result<Self, PathError> {
        Self::try_from(NormalizedPath::parse(decoded)?)
    }

    /// The path text, e.g. `/pub/app/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Which area it lies in.
    pub fn scope(&self) -> Scope {
        Scope::of(&self.0)
    }
}

impl TryFrom<NormalizedPath> for DirPath {
    type Error = PathError;

    fn try_from(path: NormalizedPath) -> Result<Self, PathError> {
        if !path.is_dir() {
            return Err(PathError::IsFile);
        }
        Ok(Self(path.0))
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for DirPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_the_reference() {
        let cases = [
            ("/pub/a/b.txt", "/pub/a/b.txt"),
            ("//pub//a///b", "/pub/a/b"),
            ("/pub/./a/./b", "/pub/a/b"),
            ("/pub/x/../a", "/pub/a"),
            ("/pub/a/..", "/pub/"),
            ("/pub/a/.", "/pub/a"),
            ("/pub/a/b..", "/pub/a/b.."),
            ("/pub/a/?../.", "/pub/a/?.."),
            ("/pub/a/b/", "/pub/a/b/"),
            ("/", "/"),
            (
                "/pub/with space/ünï cödé/*<:>",
                "/pub/with space/ünï cödé/*<:>",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                NormalizedPath::parse(input).unwrap().as_str(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_bad_paths_with_a_reason() {
        let long_segment = format!("/pub/{}", "a".repeat(256));
        let long_path = format!("/pub/{}", "abcdefgh/".repeat(456));
        let cases = [
            ("pub/a", PathError::NotAbsolute),
            ("/pub/../../etc", PathError::EscapesRoot),
            ("/..", PathError::EscapesRoot),
            ("/pub/a\0b", PathError::ControlCharacter),
            ("/pub/a\u{7f}", PathError::ControlCharacter),
            ("/pub/a\u{85}", PathError::ControlCharacter),
            ("/pub/a\nb", PathError::ControlCharacter),
            (long_segment.as_str(), PathError::SegmentTooLong),
            (long_path.as_str(), PathError::TooLong),
        ];
        for (input, expected) in cases {
            assert_eq!(NormalizedPath::parse(input), Err(expected), "{input:?}");
        }
        assert!(NormalizedPath::parse(&format!("/pub/{}", "a".repeat(255))).is_ok());
    }

    #[test]
    fn entries_are_files_and_directories_end_in_a_slash() {
        assert_eq!(EntryPath::parse("/pub/a").unwrap().file_name(), "a");
        assert_eq!(EntryPath::parse("/pub/a/"), Err(PathError::IsDirectory));
        assert_eq!(EntryPath::parse("/pub/a/.."), Err(PathError::IsDirectory));
        assert_eq!(DirPath::parse("/pub/").unwrap().as_str(), "/pub/");
        assert_eq!(DirPath::parse("/pub/a"), Err(PathError::IsFile));
        // Which area a path lies in is no business of the types: authorization decides.
        assert_eq!(
            EntryPath::parse("/private/a").unwrap().as_str(),
            "/private/a"
        );
        assert_eq!(DirPath::parse("/").unwrap().as_str(), "/");
    }

    #[test]
    fn scopes_are_the_top_level_areas() {
        let scope = |path: &str| NormalizedPath::parse(path).unwrap().scope();
        assert_eq!(scope("/pub/a"), Scope::Public);
        assert_eq!(scope("/pub/"), Scope::Public);
        assert_eq!(scope("/priv/a/"), Scope::Private);
        for other in ["/", "/pub", "/priv", "/public/a", "/private/a", "/x/pub/a"] {
            assert_eq!(scope(other), Scope::Other, "{other}");
        }
        assert_eq!(EntryPath::parse("/pub/a").unwrap().scope(), Scope::Public);
        assert_eq!(EntryPath::parse("/priv/a").unwrap().scope(), Scope::Private);
        assert_eq!(DirPath::parse("/pub/a/").unwrap().scope(), Scope::Public);
        assert_eq!(DirPath::parse("/").unwrap().scope(), Scope::Other);
        // A raw path's scope is that of its text as sent.
        assert_eq!(Scope::of("/%70ub/a"), Scope::Other);
    }
}
