//! Writing the report: atomically where the path allows it, so a reader never sees half a
//! report, and in place where it cannot.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `content` to `path`.
///
/// A regular file (or a path that does not exist yet) gets a temporary file in the same
/// directory, which is renamed over it. When that cannot work the file is written in place:
/// `/dev/termination-log` is a regular file bind-mounted by the kubelet (a rename onto a mount
/// point fails with `EBUSY`) in a directory a non-root container cannot write. Anything else is
/// written directly, through the path: a device or FIFO, and a symlink (`/dev/stderr` is one,
/// and a rename would replace the link itself, not what it points to).
pub fn write_report(path: &Path, content: &str) -> io::Result<()> {
    if is_our_stdout_or_stderr(path) {
        // `--report /dev/stdout > file`: add to what is there (the rules, the logs).
        return OpenOptions::new().append(true).open(path)?.write_all(content.as_bytes());
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => return write_in_place(path, content),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match write_atomically(path, content) {
        Ok(()) => Ok(()),
        Err(atomic) => write_in_place(path, content).map_err(|in_place| {
            io::Error::new(in_place.kind(), format!("{in_place} (writing a temporary file and renaming it: {atomic})"))
        }),
    }
}

/// Whether `path` is the file our stdout or stderr writes to (`/dev/stdout`, `/proc/self/fd/2`,
/// or the file they were redirected to), which must not be truncated or replaced.
fn is_our_stdout_or_stderr(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = fs::metadata(path) else { return false };
    ["/proc/self/fd/1", "/proc/self/fd/2"]
        .into_iter()
        .filter_map(|fd| fs::metadata(fd).ok())
        .any(|ours| (ours.dev(), ours.ino()) == (target.dev(), target.ino()))
}

fn write_in_place(path: &Path, content: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    file.write_all(content.as_bytes())
}

fn write_atomically(path: &Path, content: &str) -> io::Result<()> {
    let temporary = temporary_path(path)?;
    let mut file = OpenOptions::new().write(true).create_new(true).open(&temporary)?;
    let written =
        file.write_all(content.as_bytes()).and_then(|()| file.sync_all()).and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// `.<name>.<pid>.tmp` beside `path`.
fn temporary_path(path: &Path) -> io::Result<PathBuf> {
    let name =
        path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the report path names no file"))?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".{}.tmp", std::process::id()));
    Ok(path.with_file_name(temporary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_regular_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        fs::write(&path, "an older and much longer report\n").unwrap();
        write_report(&path, "{}\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}\n");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("report.json")]);
    }

    #[test]
    fn creates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.json");
        write_report(&path, "{\"a\": 1}\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"a\": 1}\n");
    }

    #[test]
    fn writes_in_place_when_no_temporary_file_can_be_made() {
        // Stands in for a directory that refuses new files (root ignores permissions): the
        // temporary file's name is taken, so the existing file is written in place.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        fs::write(&path, "old").unwrap();
        let taken = temporary_path(&path).unwrap();
        fs::create_dir(&taken).unwrap();
        write_report(&path, "new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert!(taken.is_dir(), "a temporary name this run did not create is left alone");
    }

    #[test]
    fn a_symlink_is_written_through_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.json");
        let link = dir.path().join("link.json");
        fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_report(&link, "{}\n").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
        assert_eq!(fs::read_to_string(&target).unwrap(), "{}\n");
    }

    #[test]
    fn a_path_that_is_not_a_regular_file_is_written_directly() {
        // /dev/null accepts the write and must not be replaced by a regular file.
        write_report(Path::new("/dev/null"), "{}\n").unwrap();
        assert!(!fs::metadata("/dev/null").unwrap().is_file());
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let err = write_report(Path::new("/nonexistent-dir/report.json"), "{}\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
