//! What the sandbox and container stores share: records written atomically as JSON, lookups
//! by a full id or a unique prefix of one (as containerd's stores answer them), and locks that
//! survive a panicked holder.

use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// A lock whose holder panicked still guards consistent data here (every update is one
/// assignment or an atomic file rename): take it instead of failing every later call.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why an id found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    NotFound,
    /// A prefix of more than one id.
    Ambiguous,
}

/// The entry for `id`, a full id or a unique prefix of one; an empty id finds nothing.
pub fn find<T: Clone>(map: &HashMap<String, T>, id: &str) -> Result<(String, T), Lookup> {
    if let Some(v) = map.get(id) {
        return Ok((id.to_string(), v.clone()));
    }
    if id.is_empty() {
        return Err(Lookup::NotFound);
    }
    let mut hits = map.iter().filter(|(k, _)| k.starts_with(id));
    match (hits.next(), hits.next()) {
        (Some((k, v)), None) => Ok((k.clone(), v.clone())),
        (Some(_), Some(_)) => Err(Lookup::Ambiguous),
        _ => Err(Lookup::NotFound),
    }
}

/// Writes `v` as JSON to `path` through a temporary file renamed into place, so a reader (or
/// a husk-cri restarted after a crash) sees the old record or the new one, never half of one.
/// The error names the file that failed.
pub fn write_json(
    path: &Path,
    v: &impl Serialize,
) -> Result<(), (&'static str, std::path::PathBuf, std::io::Error)> {
    let data = serde_json::to_vec_pretty(v)
        .map_err(|e| ("encode", path.to_path_buf(), std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    // Owner-only: a record holds the container's config (its env may hold secrets), and the
    // bundle of a user-namespaced pod is searchable by others (mode 0711).
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&data))
            .map_err(|e| ("write", tmp.clone(), e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| ("rename to", path.to_path_buf(), e))
}

/// One entry of a store's directory as a restarted husk-cri finds it: the directory's name (an
/// id), its path, and the record `file` in it when it parses and names that same id (None: a
/// create cut short, or a damaged record: the caller cleans the entry up).
pub struct Found<R> {
    pub id: String,
    pub dir: std::path::PathBuf,
    pub file: std::path::PathBuf,
    pub record: Option<R>,
}

/// Every entry of `dir` with its record `file` (see [`Found`]).
pub fn load_all<R: serde::de::DeserializeOwned>(
    dir: &Path,
    file: &str,
    id_of: impl Fn(&R) -> &str,
) -> std::io::Result<Vec<Found<R>>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        let path = e.path();
        let Some(id) = path.file_name().and_then(|n| n.to_str()).map(String::from) else {
            continue;
        };
        let rec_path = path.join(file);
        let record = std::fs::read(&rec_path)
            .ok()
            .and_then(|d| serde_json::from_slice::<R>(&d).ok())
            .filter(|r| id_of(r) == id);
        out.push(Found {
            id,
            dir: path,
            file: rec_path,
            record,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_by_full_id_or_unique_prefix() {
        let m: HashMap<String, u8> = [("abc1".to_string(), 1), ("abd2".to_string(), 2)].into();
        assert_eq!(find(&m, "abc1"), Ok(("abc1".to_string(), 1)));
        assert_eq!(find(&m, "abd"), Ok(("abd2".to_string(), 2)));
        assert_eq!(find(&m, "ab"), Err(Lookup::Ambiguous));
        assert_eq!(find(&m, "x"), Err(Lookup::NotFound));
        assert_eq!(find(&m, ""), Err(Lookup::NotFound));
    }

    #[test]
    fn load_all_keeps_only_records_naming_their_directory() {
        let d = tempfile::tempdir().expect("tempdir");
        for (dir, id) in [("a", "a"), ("b", "other")] {
            std::fs::create_dir(d.path().join(dir)).expect("mkdir");
            write_json(
                &d.path().join(dir).join("r.json"),
                &serde_json::json!({"id": id}),
            )
            .expect("write");
        }
        std::fs::create_dir(d.path().join("c")).expect("mkdir");
        let mut found = load_all::<serde_json::Value>(d.path(), "r.json", |r| {
            r["id"].as_str().unwrap_or_default()
        })
        .expect("load");
        found.sort_by(|x, y| x.id.cmp(&y.id));
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.id.as_str(), f.record.is_some()))
            .collect();
        assert_eq!(got, [("a", true), ("b", false), ("c", false)]);
    }

    #[test]
    fn records_are_replaced_whole() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("r.json");
        write_json(&p, &serde_json::json!({"a": 1})).expect("write");
        write_json(&p, &serde_json::json!({"a": 2})).expect("rewrite");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
        assert_eq!(v["a"], 2);
        assert!(!d.path().join("r.json.tmp").exists());
        let e = write_json(&d.path().join("no/such/dir.json"), &1).expect_err("no dir");
        assert_eq!(e.0, "write");
    }
}
