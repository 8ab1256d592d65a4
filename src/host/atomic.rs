//! Replacing a small file whole, the one way every writer here does it: a temp file
//! (`.<name>.<pid>`, opened with `O_NOFOLLOW`, so a symlink planted where it goes is never
//! written through), renamed over the file, so a reader sees the old content or the new, never
//! half. Durable writes also fsync the file and the directory, so a crash keeps one of the two.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Whether a replacement must survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync of the file and the directory (state, installed files).
    Synced,
    /// Rename only: for advisory files under /run, which a reboot empties anyway.
    RenameOnly,
}

/// The temp file a replacement of `path` writes first, in `tmp_dir`.
pub fn temp_path(path: &Path, tmp_dir: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    tmp_dir.join(format!(".{name}.{}", std::process::id()))
}

/// Replaces `path` with `bytes` (file mode `mode`) through a temp file in `tmp_dir`, which must
/// be on the same filesystem. The temp file is removed when anything fails.
pub fn replace(
    path: &Path,
    tmp_dir: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<()> {
    let tmp = temp_path(path, tmp_dir);
    let result = write_and_rename(&tmp, path, bytes, mode, durability);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_and_rename(
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)?;
    f.write_all(bytes)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    if durability == Durability::Synced {
        f.sync_all()?;
    }
    drop(f);
    fs::rename(tmp, path)?;
    if durability == Durability::Synced {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_leaves_the_new_content_with_its_mode_and_no_temp_file() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("f");
        fs::write(&path, "old").unwrap();
        replace(&path, t.path(), b"new", 0o640, Durability::Synced).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_where_the_temp_file_goes_is_never_written_through() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let path = t.path().join("f");
        std::os::unix::fs::symlink(&victim, temp_path(&path, t.path())).unwrap();
        assert!(replace(&path, t.path(), b"x", 0o600, Durability::RenameOnly).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!path.exists());
    }
}
