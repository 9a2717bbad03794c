//! The small HTTP/1.0 client the CLI uses to ask a running agent, over its read-only TCP
//! endpoint or its control socket, and the typed reading of its JSON answers into the admin
//! API's types.
use std::{
    io::{Read, Write},
    net::SocketAddr,
    path::PathBuf,
};

use anyhow::{bail, Context};

use super::api::{
    Registration, Reloaded, ReplicasView, Status, RELOAD_PAGE, REPLICAS_PAGE, STATUS_PAGE,
    WORKLOAD_SCOPE_PAGE,
};

/// Where an agent is asked.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The read-only pages on TCP (`admin.port`).
    Tcp(SocketAddr),
    /// Every page, for root and the control group (`admin.control`).
    Control(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(address) => write!(f, "{address}"),
            Endpoint::Control(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The agent's status.
pub fn status(admin: &Endpoint) -> anyhow::Result<Status> {
    let (code, body) = request(admin, "GET", STATUS_PAGE, "")?;
    if code != 200 {
        bail!("the agent at {admin} answered {STATUS_PAGE} with {code}: {body}");
    }
    serde_json::from_str(&body).context("the agent's status is not JSON")
}

/// The agent's replicants and cross resources; the agent's own sentence when it has none to
/// show (a site without resource rules).
pub fn replicas(admin: &Endpoint) -> anyhow::Result<ReplicasView> {
    let (_, body) = request(admin, "GET", REPLICAS_PAGE, "")?;
    serde_json::from_str(&body).map_err(|_| anyhow::anyhow!("{}", body.trim()))
}

/// Registers (or, with no scope, removes) a cgroup's default scope.
pub fn register(admin: &Endpoint, registration: &Registration) -> anyhow::Result<()> {
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

/// Has the agent apply its configuration file again: the generation it runs then.
pub fn reload(admin: &Endpoint) -> anyhow::Result<u64> {
    let (code, body) = request(admin, "POST", RELOAD_PAGE, "")?;
    if code != 200 {
        bail!(
            "the agent refused the reload, its configuration stays: {}",
            body.trim_end()
        );
    }
    let reloaded: Reloaded =
        serde_json::from_str(&body).context("the agent's reload answer is not JSON")?;
    Ok(reloaded.generation)
}

/// One request to an agent's admin endpoint: its status code and body.
pub fn request(
    admin: &Endpoint,
    method: &str,
    page: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream: Box<dyn Duplex> = match admin {
        Endpoint::Tcp(address) => {
            Box::new(std::net::TcpStream::connect(address).with_context(|| {
                format!("no cheops agent answers at {address} (is it running? see `admin.port`)")
            })?)
        }
        Endpoint::Control(path) => Box::new(
            std::os::unix::net::UnixStream::connect(path).with_context(|| {
                format!(
                    "cannot reach the cheops control socket {} (is the agent running? is this \
                     root, or a member of `admin.control_group`? see `admin.control`)",
                    path.display()
                )
            })?,
        ),
    };
    write!(
        stream,
        "{method} {page} HTTP/1.0\r\nHost: cheops\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .with_context(|| format!("writing to the agent at {admin}"))?;
    // HTTP/1.0: the answer ends when the agent closes the connection.
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("reading the agent's answer at {admin}"))?;
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

/// A TCP or Unix connection to the agent.
trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}
