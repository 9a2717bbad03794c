//! A WAN link for tests: a relay inside a network namespace that accepts TCP and passes each
//! connection on to a target, holding every chunk half the round trip in each direction, in
//! order. The kernel here has no netem, so the delay is added in user space: by a thread of
//! the test's own process, entered into the namespace, so that the 30 relays of a 16-site mesh
//! take little of the CPU that the sites share.
use std::{fs::File, io, net::SocketAddr, os::fd::AsRawFd, thread::JoinHandle, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::{mpsc, oneshot},
    time::Instant,
};

/// The most a relay reads at once, as one chunk.
const CHUNK: usize = 64 * 1024;

/// How long a relay waits for its port to be free again.
const REBIND_PATIENCE: Duration = Duration::from_secs(3);

/// A running relay; stopped, with every connection through it cut, when dropped.
pub struct WanRelay {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WanRelay {
    /// Listens at `listen` inside the namespace `netns` and relays to `target` (reached from
    /// that namespace), adding `round_trip` to every round trip. Returns once it listens.
    pub fn start(
        netns: &str,
        listen: SocketAddr,
        target: SocketAddr,
        round_trip: Duration,
    ) -> WanRelay {
        let namespace = File::open(format!("/run/netns/{netns}"))
            .unwrap_or_else(|error| panic!("relay {listen}: namespace {netns}: {error}"));
        let (listening, listened) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("relay {listen}"))
            .spawn(move || {
                let relay = async move {
                    let listener = match bind_in(&namespace, listen).await {
                        Ok(listener) => listener,
                        Err(error) => return drop(listening.send(Err(error))),
                    };
                    let _ = listening.send(Ok(()));
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept(listener, target, round_trip / 2) => {}
                    }
                };
                // One thread: every socket of the relay is made on it, inside the namespace.
                // Dropping the runtime at the end cancels every connection's tasks.
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the relay")
                    .block_on(relay);
            })
            .expect("a thread for the relay");
        match listened.recv() {
            Ok(Ok(())) => WanRelay {
                stop: Some(stop),
                thread: Some(thread),
            },
            Ok(Err(error)) => panic!("relay {listen} to {target}: {error}"),
            Err(_) => panic!("relay {listen} to {target} ended before it listened"),
        }
    }
}

impl Drop for WanRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Enters `namespace` (this thread only) and listens at `listen` there.
///
/// A relay replaced by another at the same port (a fault that changes a link's delay) closes
/// its listener first, but a process that the test forks at that moment (a `curl`, from
/// another thread) holds a copy of it until its `exec`: the port stays taken for that long,
/// so binding is tried again for up to `REBIND_PATIENCE`.
async fn bind_in(namespace: &File, listen: SocketAddr) -> io::Result<TcpListener> {
    // SAFETY: setns takes a file descriptor that `namespace` keeps open for the call, and
    // changes the network namespace of the calling thread only.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let patience = Instant::now() + REBIND_PATIENCE;
    loop {
        match TcpListener::bind(listen).await {
            Err(error) if error.kind() == io::ErrorKind::AddrInUse && Instant::now() < patience => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            bound => return bound,
        }
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, one_way: Duration) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(async move {
            // As a link to a host that is down: the client's connection is closed.
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            // A link passes each packet on as it comes: no chunk waits for the one before
            // it to be acknowledged (Nagle's algorithm).
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (from_client, to_client) = client.into_split();
            let (from_server, to_server) = server.into_split();
            tokio::join!(
                delay(from_client, to_server, one_way),
                delay(from_server, to_client, one_way)
            );
        });
    }
}

/// Passes what `from` sends on to `to`, each chunk `one_way` after it was read, in order;
/// `to`'s sending side is shut down after the end of `from`'s.
async fn delay(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, one_way: Duration) {
    let (chunks, mut due_chunks) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let deliver = async move {
        while let Some((due, chunk)) = due_chunks.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let read = async move {
        let mut buffer = vec![0; CHUNK];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(length) => {
                    let chunk = buffer[..length].to_vec();
                    if chunks.send((Instant::now() + one_way, chunk)).is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::join!(read, deliver);
}
