//! The control socket: a Unix socket where the admin pages that change the agent are served
//! (and the read-only ones too), to root and, when configured, one group. The file's owner and
//! mode keep everyone else from connecting; the caller's credentials (`SO_PEERCRED`, and its
//! groups, `SO_PEERGROUPS`) are checked again on every connection, so a socket whose mode was
//! loosened by mistake still lets no one else steer.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, RawFd},
        unix::fs::{FileTypeExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

/// Where the control socket is and who may use it besides root.
#[derive(Clone, Debug)]
pub struct ControlSocket {
    pub path: PathBuf,
    /// The group's name and id.
    pub group: Option<(String, u32)>,
}

impl ControlSocket {
    /// `group`: a group name, looked up now so that a misspelt one stops the agent at start.
    pub fn new(path: &Path, group: Option<&str>) -> anyhow::Result<ControlSocket> {
        let group = group
            .map(|name| {
                group_id(name)
                    .map(|gid| (name.to_owned(), gid))
                    .with_context(|| format!("`admin.control_group`: no group '{name}'"))
            })
            .transpose()?;
        Ok(ControlSocket {
            path: path.to_owned(),
            group,
        })
    }

    /// Binds the socket, owned by root (and the group), mode 0600 (0660 with a group). A socket
    /// left by an agent that died is replaced; one where an agent still answers is not.
    pub(super) fn bind(&self) -> anyhow::Result<std::os::unix::net::UnixListener> {
        let path = &self.path;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the directory of {}", path.display()))?;
        }
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another cheops agent answers on the control socket {} (see `admin.control`)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale control socket {}", path.display()))?;
        }
        let listener = std::os::unix::net::UnixListener::bind(path)
            .with_context(|| format!("binding the control socket {}", path.display()))?;
        // Until the mode is set, the credentials check below is what keeps others out.
        let (gid, mode) = match &self.group {
            Some((_, gid)) => (*gid, 0o660),
            None => (0, 0o600),
        };
        std::os::unix::fs::chown(path, Some(0), Some(gid))
            .with_context(|| format!("giving the control socket {} to root", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    /// Why the caller on `stream` may not steer the agent, if it may not.
    pub(super) fn refusal(&self, stream: &tokio::net::UnixStream) -> Option<String> {
        let credentials = match stream.peer_cred() {
            Ok(credentials) => credentials,
            Err(err) => return Some(format!("its credentials cannot be read: {err}")),
        };
        let (uid, gid) = (credentials.uid(), credentials.gid());
        if uid == 0 {
            return None;
        }
        let allowed = match &self.group {
            None => "root only".to_owned(),
            Some((name, group)) => {
                let groups = peer_groups(stream.as_raw_fd()).unwrap_or_default();
                if gid == *group || groups.contains(group) {
                    return None;
                }
                format!("root and group {name} only")
            }
        };
        Some(format!(
            "uid {uid} (gid {gid}) may not use the control socket {}: {allowed}",
            self.path.display()
        ))
    }
}

/// The supplementary groups of the process at the other end of a Unix socket.
fn peer_groups(fd: RawFd) -> io::Result<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` has room for `len` bytes, and getsockopt writes at most that many.
        let result = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if result == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        // Too small a buffer: the kernel said how much it needs.
        if err.raw_os_error() != Some(libc::ERANGE) || count <= groups.len() {
            return Err(err);
        }
        groups.resize(count, 0);
    }
}

/// The id of the group `name`.
fn group_id(name: &str) -> anyhow::Result<u32> {
    let name = CString::new(name)?;
    // SAFETY: a `group` of zeroes (null pointers) is valid; getgrnam_r fills it in.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found = std::ptr::null_mut();
    // SAFETY: every pointer is to a live value of the right type; `buffer` is as long as said.
    let result = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut group,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if result != 0 {
        bail!("{}", io::Error::from_raw_os_error(result));
    }
    if found.is_null() {
        bail!("not in the group database");
    }
    Ok(group.gr_gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_found_by_name_and_a_missing_one_is_named() {
        assert_eq!(group_id("root").unwrap(), 0);
        let err = ControlSocket::new(Path::new("/x"), Some("no-such-group-cheops"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-group-cheops"), "{err}");
    }
}
