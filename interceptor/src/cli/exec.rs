//! `cheops exec --scope EXPR -- COMMAND...`: runs an unmodified command in a transient child
//! cgroup of a workload, registered with the local agent so that every request of the command
//! carries the scope; the registration and the cgroup are removed when the command ends.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::Context;

use crate::{
    admin::{
        api::Registration,
        client::{self, Endpoint},
    },
    intercept::cgroup::{enter_on_exec, kill_and_remove},
};

pub fn run(
    admin: &Endpoint,
    scope: &str,
    workload: Option<&Path>,
    command: &[OsString],
) -> anyhow::Result<ExitCode> {
    let (program, args) = command
        .split_first()
        .context("no command given after `--`")?;
    let parent = workload_of_agent(admin, workload)?;
    let cgroup =
        TransientCgroup::create(parent.join(format!("cheops-exec-{}", std::process::id())))?;
    register(admin, &cgroup.path, Some(scope))?;
    let mut child = Command::new(program);
    child.args(args);
    enter_on_exec(&mut child, &cgroup.path)?;
    outlive_terminal_signals();
    let status = child
        .status()
        .with_context(|| format!("running {}", program.to_string_lossy()));
    if let Err(err) = register(admin, &cgroup.path, None) {
        eprintln!("cheops exec: removing the scope registration: {err:#}");
    }
    let status = status?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// A Ctrl-C (or Ctrl-\) at the terminal reaches the whole foreground group: the command, which
/// decides what to do with it, and this process, which must outlive the command to remove its
/// scope registration and cgroup. A handler that does nothing keeps it alive; the command gets
/// the default disposition back when it is executed (handlers do not survive `exec`, unlike an
/// ignored signal).
fn outlive_terminal_signals() {
    extern "C" fn wait_for_the_command(_: libc::c_int) {}
    for signal in [libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: the handler is async-signal-safe (it does nothing) and lives for the whole
        // program; `signal` has no other precondition.
        unsafe {
            libc::signal(
                signal,
                wait_for_the_command as *const () as libc::sighandler_t,
            )
        };
    }
}

/// The workload cgroup to run in: the one asked for, else the agent's first.
fn workload_of_agent(admin: &Endpoint, wanted: Option<&Path>) -> anyhow::Result<PathBuf> {
    let workloads = client::status(admin)?.workloads;
    match wanted {
        Some(wanted) => workloads
            .into_iter()
            .find(|w| w == wanted || w.ends_with(wanted))
            .with_context(|| {
                format!(
                    "the agent at {admin} has no workload cgroup {}",
                    wanted.display()
                )
            }),
        None => workloads
            .into_iter()
            .next()
            .with_context(|| format!("the agent at {admin} has no workload cgroup")),
    }
}

fn register(admin: &Endpoint, cgroup: &Path, scope: Option<&str>) -> anyhow::Result<()> {
    client::register(
        admin,
        &Registration {
            cgroup: cgroup.to_owned(),
            scope: scope.map(str::to_owned),
        },
    )
}

/// A cgroup made for one command; whatever is left in it is killed and it is removed on drop.
struct TransientCgroup {
    path: PathBuf,
}

impl TransientCgroup {
    fn create(path: PathBuf) -> anyhow::Result<TransientCgroup> {
        std::fs::create_dir(&path)
            .with_context(|| format!("creating the cgroup {}", path.display()))?;
        Ok(TransientCgroup { path })
    }
}

impl Drop for TransientCgroup {
    fn drop(&mut self) {
        if !kill_and_remove(&self.path) {
            eprintln!(
                "cheops exec: could not remove the cgroup {}",
                self.path.display()
            );
        }
    }
}
