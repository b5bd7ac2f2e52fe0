//! User and group names to numeric ids, read from `/etc/passwd` and `/etc/group` directly.
//!
//! `nft` resolves `skuid NAME`/`skgid NAME` through libc (NSS); the kernel only takes numbers.
//! A static binary has no NSS, and the pod's files are what the init container sees anyway.

use std::path::{Path, PathBuf};

use crate::error::ReadError;
use crate::host;
use crate::plan::Owner;

/// A name that is neither numeric nor resolvable from the database it belongs to.
#[derive(Debug, thiserror::Error)]
pub enum UnknownName {
    #[error("{kind} {name:?} is not listed in {path} (names are resolved without NSS; use a numeric id or add the entry)", path = path.display())]
    NotListed { kind: &'static str, name: String, path: PathBuf },
    /// The database itself could not be read (a FIFO, a device, over the size cap, ...): that is
    /// the cause to report, not the name.
    #[error("cannot resolve {kind} {name:?}: cannot read {path}: {source}", path = path.display())]
    Unreadable {
        kind: &'static str,
        name: String,
        path: PathBuf,
        #[source]
        source: ReadError,
    },
}

/// Resolves names, reading each database at most once per run, with the same bounded reader and
/// line rules as the configuration's `ENVOY_USER` lookup (`crate::host`).
#[derive(Debug)]
pub(crate) struct IdResolver {
    passwd: PathBuf,
    group: PathBuf,
    users: Option<String>,
    groups: Option<String>,
}

impl IdResolver {
    pub(crate) fn new(etc: &Path) -> IdResolver {
        IdResolver { passwd: etc.join("passwd"), group: etc.join("group"), users: None, groups: None }
    }

    pub(crate) fn owner(&mut self, owner: &Owner) -> Result<u32, UnknownName> {
        let (id, kind, path, cache, lookup): (_, _, _, _, fn(&str, &str) -> Option<u32>) = match owner {
            Owner::Uid(id) => (id, "user", &self.passwd, &mut self.users, host::uid_in_passwd),
            Owner::Gid(id) => (id, "group", &self.group, &mut self.groups, host::gid_in_group_file),
        };
        if let Ok(number) = id.as_str().parse::<u32>() {
            return Ok(number);
        }
        let name = || id.as_str().to_string();
        if cache.is_none() {
            let text = host::read_host_file(path).map_err(|source| UnknownName::Unreadable {
                kind,
                name: name(),
                path: path.clone(),
                source,
            })?;
            *cache = Some(text);
        }
        cache.as_deref().and_then(|text| lookup(text, id.as_str())).ok_or_else(|| UnknownName::NotListed {
            kind,
            name: name(),
            path: path.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OwnerId;

    fn owner_gid(name: &str) -> Owner {
        Owner::Gid(OwnerId::parse("-g", name).unwrap())
    }

    #[test]
    fn names_resolve_from_the_files_and_numbers_pass_through() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(etc.path().join("group"), "root:x:0:\n# junk\nftp:x:50:\nftp:x:51:\n").unwrap();
        std::fs::write(etc.path().join("passwd"), "istio-proxy:x:1337:1337::/:/bin/false\n").unwrap();
        let mut ids = IdResolver::new(etc.path());
        assert_eq!(ids.owner(&owner_gid("ftp")).unwrap(), 50);
        assert_eq!(ids.owner(&owner_gid("4242")).unwrap(), 4242);
        assert_eq!(ids.owner(&Owner::Uid(OwnerId::parse("-u", "istio-proxy").unwrap())).unwrap(), 1337);
        let err = ids.owner(&owner_gid("nosuchgroup")).unwrap_err().to_string();
        assert!(err.starts_with("group \"nosuchgroup\" is not listed in "), "{err}");
    }

    #[test]
    fn an_unreadable_database_is_named_as_the_cause() {
        let etc = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&etc.path().join("group"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let oversized = vec![b'#'; crate::host::MAX_HOST_FILE_BYTES as usize + 1];
        std::fs::write(etc.path().join("passwd"), oversized).unwrap();
        let mut ids = IdResolver::new(etc.path());
        let err = ids.owner(&owner_gid("daemon")).unwrap_err();
        let group = etc.path().join("group");
        assert_eq!(
            err.to_string(),
            format!("cannot resolve group \"daemon\": cannot read {}: not a regular file (a FIFO)", group.display())
        );
        assert!(std::error::Error::source(&err).is_some());
        let err = ids.owner(&Owner::Uid(OwnerId::parse("-u", "daemon").unwrap())).unwrap_err().to_string();
        let passwd = etc.path().join("passwd");
        assert!(
            err.starts_with(&format!("cannot resolve user \"daemon\": cannot read {}: larger than", passwd.display())),
            "{err}"
        );
    }
}
