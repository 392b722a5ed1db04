//! Artifacts in a local folder. Writes are atomic (a temporary file, fsync, then rename), so a
//! crash never leaves a half-written artifact.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use super::ArtifactStore;

pub struct LocalArtifacts {
    root: PathBuf,
}

impl LocalArtifacts {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    /// Keys are relative paths made by the server; anything that would escape the root is refused.
    fn path(&self, key: &str) -> std::io::Result<PathBuf> {
        let rel = Path::new(key);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid artifact key '{key}'"),
            ));
        }
        Ok(self.root.join(rel))
    }
}

impl ArtifactStore for LocalArtifacts {
    fn put(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().expect("artifact keys have a parent");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().unwrap().to_string_lossy(),
            uuid::Uuid::now_v7()
        ));
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn get(&self, key: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(key)?)
    }

    fn delete(&self, key: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(key)?) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn delete_prefix(&self, prefix: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.path(prefix)?) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok().filter(|path| path.is_file())
    }

    fn list(&self, prefix: &str) -> std::io::Result<Vec<(String, std::time::SystemTime)>> {
        fn walk(
            root: &Path,
            dir: &Path,
            out: &mut Vec<(String, std::time::SystemTime)>,
        ) -> std::io::Result<()> {
            let entries = match std::fs::read_dir(dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                other => other?,
            };
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                let meta = entry.metadata()?;
                if meta.is_dir() {
                    walk(root, &path, out)?;
                } else if let Ok(rel) = path.strip_prefix(root) {
                    out.push((rel.to_string_lossy().into_owned(), meta.modified()?));
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(&self.root, &self.path(prefix)?, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::ArtifactStore;

    #[test]
    fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalArtifacts::new(dir.path()).unwrap();
        assert!(store.put("../evil", b"x").is_err());
        assert!(store.put("/etc/evil", b"x").is_err());
        store.put("runs/a/model.tym", b"ok").unwrap();
        assert_eq!(store.get("runs/a/model.tym").unwrap(), b"ok");
        let path = store.local_path("runs/a/model.tym").expect("a local file");
        assert_eq!(std::fs::read(path).unwrap(), b"ok");
        assert_eq!(store.local_path("../evil"), None);
        assert_eq!(store.local_path("runs/a/missing"), None);
        store.delete_prefix("runs/a").unwrap();
        assert!(store.get("runs/a/model.tym").is_err());
        store.delete_prefix("runs/a").unwrap();
    }
}
