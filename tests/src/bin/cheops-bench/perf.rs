//! perf attached to a running process for as long as something is served.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context};

/// `perf ARGS -p PID -o OUT` while `serve` runs.
pub fn over(
    args: &[&str],
    pid: u32,
    out: &Path,
    serve: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let perf = Command::new("perf")
        .args(args)
        .arg("-p")
        .arg(pid.to_string())
        .arg("-o")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("running perf (Debian package linux-perf)")?;
    let perf = Perf(perf);
    // perf attaches to every thread before the first request.
    std::thread::sleep(Duration::from_millis(300));
    serve()?;
    perf.stop()
}

/// perf, stopped by SIGINT (when it writes its counts), killed if dropped before.
struct Perf(Child);

impl Perf {
    fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) with a child's pid and a signal number.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGINT) };
        let status = self.0.wait()?;
        ensure!(
            status.success() || status.code() == Some(130) || status.code().is_none(),
            "perf failed ({status})"
        );
        Ok(())
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
