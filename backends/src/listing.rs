//! Directory listings (PROTOCOL.md §9) on top of [`Metadata::scan_paths`]: deep listings are one range
//! scan; shallow listings collapse each sub-directory into one `name/` line and jump past its files, so a
//! directory with a huge sub-tree costs one query per sub-directory, not one row per file.

use crate::metadata::{Metadata, PathScan, Result};
use crate::store::ListRequest;

/// The smallest string greater than `path` that a stored path can equal: control characters are never
/// stored, so nothing lies between `path` and `path + "\u{1}"`.
/// Rows a shallow listing reads at first in one query beyond what the page needs; each further query
/// reads twice as many, up to [`MAX_BATCH`]. Rows of a subdirectory are skipped in memory, and a large
/// subdirectory with one jump past it, so a listing costs a few queries however its entries spread.
const MIN_BATCH: usize = 64;
/// The most rows one query of a shallow listing reads.
const MAX_BATCH: usize = 1024;

fn after(path: &str) -> String {
    format!("{path}\u{1}")
}

/// The exclusive upper bound of everything under a directory `d/`: `d0` (`0` follows `/`).
fn dir_end(dir: &str) -> String {
    format!("{}0", &dir[..dir.len() - 1])
}

/// `dir + first segment`, with a `/` when `path` continues below it.
fn shallow_name(dir: &str, path: &str) -> String {
    let rest = &path[dir.len()..];
    match rest.find('/') {
        Some(i) => format!("{dir}{}", &rest[..=i]),
        None => path.to_string(),
    }
}

pub(crate) async fn list(
    metadata: &dyn Metadata,
    owner: &str,
    request: &ListRequest,
) -> Result<Option<Vec<String>>> {
    let dir = request.dir.as_str();
    let end = dir_end(dir);
    let probe = PathScan {
        from: dir.to_string(),
        until: end.clone(),
        reverse: false,
        limit: 1,
    };
    if metadata.scan_paths(owner, &probe).await?.is_empty() {
        return Ok(None);
    }
    let cursor = request.cursor.as_ref().map(|c| c.as_str());
    let limit = request.limit as usize;
    let paths = match (request.shallow, request.reverse) {
        (false, false) => {
            let from = cursor.map_or(dir.to_string(), |c| after(c).max(dir.to_string()));
            scan(metadata, owner, from, end, false, limit).await?
        }
        (false, true) => {
            let until = cursor.map_or(end.clone(), |c| c.to_string().min(end.clone()));
            scan(metadata, owner, dir.to_string(), until, true, limit).await?
        }
        (true, false) => shallow_forward(metadata, owner, dir, cursor, limit).await?,
        (true, true) => shallow_reverse(metadata, owner, dir, cursor, limit).await?,
    };
    Ok(Some(paths))
}

async fn scan(
    metadata: &dyn Metadata,
    owner: &str,
    from: String,
    until: String,
    reverse: bool,
    limit: usize,
) -> Result<Vec<String>> {
    if limit == 0 || from >= until {
        return Ok(Vec::new());
    }
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    metadata
        .scan_paths(
            owner,
            &PathScan {
                from,
                until,
                reverse,
                limit,
            },
        )
        .await
}

async fn shallow_forward(
    metadata: &dyn Metadata,
    owner: &str,
    dir: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<String>> {
    let from = cursor.map_or(dir.to_string(), |c| after(c).max(dir.to_string()));
    let keep = |name: &str| cursor.is_none_or(|c| name > c);
    let listing = Shallow {
        metadata,
        owner,
        dir,
        limit,
    };
    listing.batches(from, false, Vec::new(), keep).await
}

/// One shallow listing's scope and page size.
struct Shallow<'a> {
    metadata: &'a dyn Metadata,
    owner: &'a str,
    dir: &'a str,
    limit: usize,
}

impl Shallow<'_> {
    /// Reads the rows in growing batches from `bound` (the lower bound going forward, the upper one in
    /// reverse), adding each new shallow name that `keep` accepts to `out` until the page is full.
    async fn batches(
        &self,
        mut bound: String,
        reverse: bool,
        mut out: Vec<String>,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let Self {
            metadata,
            owner,
            dir,
            limit,
        } = *self;
        let end = dir_end(dir);
        let mut batch = MIN_BATCH;
        while out.len() < limit {
            let want = (limit - out.len()).max(batch);
            let (from, until) = if reverse {
                (dir.to_string(), bound.clone())
            } else {
                (bound.clone(), end.clone())
            };
            let rows = scan(metadata, owner, from, until, reverse, want).await?;
            let Some(last) = rows.last().cloned() else {
                break;
            };
            let exhausted = rows.len() < want;
            for path in rows {
                let name = shallow_name(dir, &path);
                if keep(&name) && out.last() != Some(&name) {
                    out.push(name);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if exhausted {
                break;
            }
            // The rest of the last group is skipped with one jump: going forward past its end, in reverse
            // below its name (everything under a group sorts above the name).
            let last_name = shallow_name(dir, &last);
            bound = match (last_name.ends_with('/'), reverse) {
                (true, false) => dir_end(&last_name),
                (true, true) => last_name,
                (false, false) => after(&last),
                (false, true) => last,
            };
            batch = (batch * 2).min(MAX_BATCH);
        }
        Ok(out)
    }
}

async fn shallow_reverse(
    metadata: &dyn Metadata,
    owner: &str,
    dir: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut until = cursor.map_or(dir_end(dir), |c| c.to_string().min(dir_end(dir)));
    // A cursor inside a sub-directory: that sub-directory's line sorts just below the cursor.
    if let Some(c) = cursor.filter(|c| c.starts_with(dir)) {
        let group = shallow_name(dir, c);
        if group.ends_with('/') && group.as_str() < c && limit > 0 {
            if !scan(metadata, owner, group.clone(), dir_end(&group), false, 1)
                .await?
                .is_empty()
            {
                out.push(group.clone());
            }
            until = until.min(group);
        }
    }
    let listing = Shallow {
        metadata,
        owner,
        dir,
        limit,
    };
    listing.batches(until, true, out, |_| true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bounds() {
        assert_eq!(shallow_name("/pub/", "/pub/a/b/c"), "/pub/a/");
        assert_eq!(shallow_name("/pub/", "/pub/file"), "/pub/file");
        assert_eq!(dir_end("/pub/a/"), "/pub/a0");
        assert!(after("/pub/a").as_str() > "/pub/a");
        assert!(after("/pub/a").as_str() < "/pub/a ");
    }
}
