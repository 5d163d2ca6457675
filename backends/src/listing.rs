//! Directory listings (PROTOCOL.md §9) on top of [`Files::scan_paths`]: deep listings are one range
//! scan; shallow listings collapse each sub-directory into one `name/` line and jump past its files, so a
//! directory with a huge sub-tree costs one query per sub-directory, not one row per file.

use async_trait::async_trait;

use crate::metadata::{Files, PathScan, Result};
use crate::store::ListRequest;

/// The smallest string greater than `path` that a stored path can equal: control characters are never
/// stored, so nothing lies between `path` and `path + "\u{1}"`.
/// Where a listing reads a user's paths from: the metadata database (or, in tests, a counted list).
#[async_trait]
pub(crate) trait Paths: Sync {
    /// Paths of `owner`'s files within the scan's range, in its order.
    async fn scan(&self, owner: &str, scan: &PathScan) -> Result<Vec<String>>;
}

#[async_trait]
impl Paths for dyn Files {
    async fn scan(&self, owner: &str, scan: &PathScan) -> Result<Vec<String>> {
        self.scan_paths(owner, scan).await
    }
}

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
    paths: &(impl Paths + ?Sized),
    owner: &str,
    request: &ListRequest,
) -> Result<Option<Vec<String>>> {
    let dir = request.dir.as_str();
    let end = dir_end(dir);
    let cursor = request.cursor.as_ref().map(|c| c.as_str());
    let limit = request.limit as usize;
    let page = match (request.shallow, request.reverse) {
        (false, false) => {
            let from = cursor.map_or(dir.to_string(), |c| after(c).max(dir.to_string()));
            scan(paths, owner, from, end.clone(), false, limit).await?
        }
        (false, true) => {
            let until = cursor.map_or(end.clone(), |c| c.to_string().min(end.clone()));
            scan(paths, owner, dir.to_string(), until, true, limit).await?
        }
        (true, false) => shallow_forward(paths, owner, dir, cursor, limit).await?,
        (true, true) => shallow_reverse(paths, owner, dir, cursor, limit).await?,
    };
    // Every scan stays within the directory, so a page with a line proves it exists; only an empty
    // page needs the probe that tells an empty page (past the cursor) from a missing directory.
    if page.is_empty()
        && scan(paths, owner, dir.to_string(), end, false, 1)
            .await?
            .is_empty()
    {
        return Ok(None);
    }
    Ok(Some(page))
}

async fn scan(
    paths: &(impl Paths + ?Sized),
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
    paths
        .scan(
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
    paths: &(impl Paths + ?Sized),
    owner: &str,
    dir: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<String>> {
    let from = cursor.map_or(dir.to_string(), |c| after(c).max(dir.to_string()));
    let keep = |name: &str| cursor.is_none_or(|c| name > c);
    let listing = Shallow {
        paths,
        owner,
        dir,
        limit,
    };
    listing.batches(from, false, Vec::new(), keep).await
}

/// One shallow listing's scope and page size.
struct Shallow<'a, P: Paths + ?Sized> {
    paths: &'a P,
    owner: &'a str,
    dir: &'a str,
    limit: usize,
}

impl<P: Paths + ?Sized> Shallow<'_, P> {
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
            paths,
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
            let rows = scan(paths, owner, from, until, reverse, want).await?;
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
    paths: &(impl Paths + ?Sized),
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
            if !scan(paths, owner, group.clone(), dir_end(&group), false, 1)
                .await?
                .is_empty()
            {
                out.push(group.clone());
            }
            until = until.min(group);
        }
    }
    let listing = Shallow {
        paths,
        owner,
        dir,
        limit,
    };
    listing.batches(until, true, out, |_| true).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::path::{DirPath, NormalizedPath};

    /// One user's paths in memory, counting the scans (each a database statement in production).
    #[derive(Default)]
    struct Counted {
        paths: BTreeSet<String>,
        scans: AtomicUsize,
    }

    #[async_trait]
    impl Paths for Counted {
        async fn scan(&self, _owner: &str, scan: &PathScan) -> Result<Vec<String>> {
            self.scans.fetch_add(1, Ordering::Relaxed);
            let range = self
                .paths
                .range(scan.from.clone()..scan.until.clone())
                .cloned();
            let limit = scan.limit as usize;
            Ok(if scan.reverse {
                range.rev().take(limit).collect()
            } else {
                range.take(limit).collect()
            })
        }
    }

    fn request(reverse: bool) -> ListRequest {
        let dir = NormalizedPath::parse("/pub/").unwrap();
        ListRequest {
            dir: DirPath::try_from(dir).unwrap(),
            cursor: None,
            limit: 1000,
            reverse,
            shallow: true,
        }
    }

    #[tokio::test]
    async fn a_shallow_listing_of_many_small_directories_takes_a_few_statements() {
        let mut source = Counted::default();
        for i in 0..1000 {
            for file in ["a", "b", "c"] {
                source.paths.insert(format!("/pub/{i:04}/{file}"));
            }
        }
        for reverse in [false, true] {
            source.scans.store(0, Ordering::Relaxed);
            let names = list(&source, "u", &request(reverse))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(names.len(), 1000);
            let first = if reverse { "/pub/0999/" } else { "/pub/0000/" };
            assert_eq!(names[0], first);
            // 3,000 rows in batches of 64 doubling to 1,024, no existence probe (the page has lines); one scan per
            // sub-directory (1,001) before.
            let scans = source.scans.load(Ordering::Relaxed);
            assert!(scans <= 8, "{scans} scans (reverse: {reverse})");
        }
    }

    #[tokio::test]
    async fn a_large_sub_directory_is_skipped_with_a_jump() {
        let mut source = Counted::default();
        for i in 0..100_000 {
            source.paths.insert(format!("/pub/big/{i:06}"));
        }
        source.paths.insert("/pub/z".into());
        let names = list(&source, "u", &request(false)).await.unwrap().unwrap();
        assert_eq!(names, ["/pub/big/", "/pub/z"]);
        let scans = source.scans.load(Ordering::Relaxed);
        assert!(scans <= 3, "{scans} scans");
    }

    #[tokio::test]
    async fn a_page_with_lines_needs_no_existence_probe() {
        let mut source = Counted::default();
        for i in 0..10 {
            source.paths.insert(format!("/pub/d/{i}"));
        }
        let mut deep = request(false);
        deep.shallow = false;
        deep.dir = DirPath::try_from(NormalizedPath::parse("/pub/d/").unwrap()).unwrap();
        assert_eq!(list(&source, "u", &deep).await.unwrap().unwrap().len(), 10);
        assert_eq!(source.scans.swap(0, Ordering::Relaxed), 1);

        // Past the last line: an empty page of an existing directory, told apart by the probe.
        deep.cursor = Some(NormalizedPath::parse("/pub/d/9").unwrap());
        assert_eq!(list(&source, "u", &deep).await.unwrap(), Some(Vec::new()));
        assert_eq!(source.scans.swap(0, Ordering::Relaxed), 2);

        deep.dir = DirPath::try_from(NormalizedPath::parse("/pub/none/").unwrap()).unwrap();
        deep.cursor = None;
        assert_eq!(list(&source, "u", &deep).await.unwrap(), None);
    }

    #[test]
    fn names_and_bounds() {
        assert_eq!(shallow_name("/pub/", "/pub/a/b/c"), "/pub/a/");
        assert_eq!(shallow_name("/pub/", "/pub/file"), "/pub/file");
        assert_eq!(dir_end("/pub/a/"), "/pub/a0");
        assert!(after("/pub/a").as_str() > "/pub/a");
        assert!(after("/pub/a").as_str() < "/pub/a ");
    }
}
