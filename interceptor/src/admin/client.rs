//! The small HTTP/1.0 client the CLI uses to ask a running agent's admin endpoint, and the
//! typed reading of its JSON answers into the admin API's types.
use std::net::SocketAddr;

use anyhow::{bail, Context};

use super::api::{
    Registration, ReplicasView, Status, REPLICAS_PAGE, STATUS_PAGE, WORKLOAD_SCOPE_PAGE,
};

/// The agent's status.
pub fn status(admin: SocketAddr) -> anyhow::Result<Status> {
    let (code, body) = request(admin, "GET", STATUS_PAGE, "")?;
    if code != 200 {
        bail!("the agent at {admin} answered {STATUS_PAGE} with {code}: {body}");
    }
    serde_json::from_str(&body).context("the agent's status is not JSON")
}

/// The agent's replicants and cross resources; the agent's own sentence when it has none to
/// show (a site without resource rules).
pub fn replicas(admin: SocketAddr) -> anyhow::Result<ReplicasView> {
    let (_, body) = request(admin, "GET", REPLICAS_PAGE, "")?;
    serde_json::from_str(&body).map_err(|_| anyhow::anyhow!("{}", body.trim()))
}

/// Registers (or, with no scope, removes) a cgroup's default scope.
pub fn register(admin: SocketAddr, registration: &Registration) -> anyhow::Result<()> {
    let (code, body) = request(
        admin,
        "PUT",
        WORKLOAD_SCOPE_PAGE,
        &serde_json::to_string(registration)?,
    )?;
    if code != 200 {
        bail!("the agent refused the scope: {}", body.trim_end());
    }
    Ok(())
}

/// One request to an agent's admin endpoint: its status code and body.
pub fn request(
    admin: SocketAddr,
    method: &str,
    page: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).with_context(|| {
        format!("no cheops agent answers at {admin} (is it running? see `admin.port`)")
    })?;
    write!(
        stream,
        "{method} {page} HTTP/1.0\r\nHost: {admin}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("the agent at {admin} gave no HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("the agent at {admin} gave no status code"))?;
    Ok((status, body.to_owned()))
}
