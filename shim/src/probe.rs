//! What a runsc binary says of itself (its flags, its version, a mark in its code), asked once
//! per binary and boot. Every sandbox has a shim process of its own, so the answer is kept in a
//! file under the runsc root (a tmpfs, root's alone), keyed by the binary's path, size, mtime and
//! inode: a binary replaced in place is asked again.

use std::{
    future::Future,
    hash::{Hash, Hasher},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// The answer to `question` about `binary`: read back from `cache_dir`, else `ask`ed and kept
/// there (only an answer is kept; `None` is asked again next time).
pub async fn cached<F>(binary: &Path, cache_dir: &Path, question: &str, ask: impl FnOnce() -> F) -> Option<String>
where
    F: Future<Output = Option<String>>,
{
    let file = answer_file(binary, cache_dir, question)?;
    if let Ok(answer) = std::fs::read_to_string(&file) {
        return Some(answer);
    }
    let answer = ask().await?;
    // Written aside and renamed: a shim starting beside this one reads all of it or nothing.
    let partial = file.with_extension(format!("{}.new", std::process::id()));
    let kept = std::fs::create_dir_all(cache_dir).and_then(|_| std::fs::write(&partial, &answer)).and_then(|_| std::fs::rename(&partial, &file));
    if let Err(e) = kept {
        log::debug!("cannot keep the answer to {question} in {}: {e}", file.display());
        let _ = std::fs::remove_file(&partial);
    }
    Some(answer)
}

fn answer_file(binary: &Path, cache_dir: &Path, question: &str) -> Option<PathBuf> {
    let meta = std::fs::metadata(binary).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (binary, meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino()).hash(&mut h);
    Some(cache_dir.join(format!(".runsc-{question}-{:016x}", h.finish())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn asked_once_per_binary_and_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, cache) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("cache"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two").unwrap();
        let asked = AtomicU32::new(0);
        let ask = |answer: &'static str| {
            let asked = &asked;
            move || async move {
                asked.fetch_add(1, Ordering::SeqCst);
                Some(answer.to_string())
            }
        };
        assert_eq!(cached(&a, &cache, "flags", ask("x")).await.as_deref(), Some("x"));
        assert_eq!(cached(&a, &cache, "flags", ask("y")).await.as_deref(), Some("x"), "read back");
        assert_eq!(cached(&a, &cache, "version", ask("v")).await.as_deref(), Some("v"), "another question");
        assert_eq!(cached(&b, &cache, "flags", ask("z")).await.as_deref(), Some("z"), "another binary");
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        std::fs::write(&a, "one, replaced").unwrap();
        assert_eq!(cached(&a, &cache, "flags", ask("w")).await.as_deref(), Some("w"), "changed in place");
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 4, "nothing half-written left");
    }

    #[tokio::test]
    async fn no_answer_is_not_kept_and_no_binary_is_not_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (a, cache) = (dir.path().join("a"), dir.path().join("cache"));
        std::fs::write(&a, "one").unwrap();
        assert_eq!(cached(&a, &cache, "flags", || async { None }).await, None);
        assert_eq!(cached(&a, &cache, "flags", || async { Some("x".into()) }).await.as_deref(), Some("x"));
        let missing = dir.path().join("missing");
        assert_eq!(cached(&missing, &cache, "flags", || async { panic!("asked about nothing") }).await, None::<String>);
    }
}
