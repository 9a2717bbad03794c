//! The data plane's threads: one single-threaded tokio runtime per core, each serving the
//! workload connections handed to it in turn, from accept to close. A request's parts (the
//! client's connection, the instance's, their timers) then wake one another on one thread:
//! no wake-up crosses threads (a futex each), and no scheduler steals work.
use std::{
    future::Future,
    sync::atomic::{AtomicUsize, Ordering},
};

use tokio::{net::TcpStream, runtime::Handle};
use tracing::warn;

use super::fast::pool;

pub struct Workers {
    /// Empty: connections are served on the runtime that accepted them.
    runtimes: Vec<Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// No threads of its own: each connection is served where it was accepted (tests).
    pub fn inline() -> Workers {
        Workers {
            runtimes: Vec::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// `count` threads (0: one per CPU this process may run on), for the life of the process.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            count => count,
        };
        let runtimes = (0..count)
            .map(|index| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let handle = runtime.handle().clone();
                // The thread's idle connections to the instances are closed once stale, even
                // while no request takes or gives back one.
                handle.spawn(pool::sweep_regularly());
                std::thread::Builder::new()
                    .name(format!("cheops-proxy-{index}"))
                    .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
                Ok(handle)
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Workers {
            runtimes,
            next: AtomicUsize::new(0),
        })
    }

    /// Serves `stream` with `serve` on the next worker's runtime.
    pub fn serve<F, S>(&self, stream: TcpStream, serve: S)
    where
        S: FnOnce(TcpStream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        if self.runtimes.is_empty() {
            tokio::spawn(serve(stream));
            return;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.runtimes.len();
        // The socket leaves this runtime's poller for the worker's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => return warn!("handing a connection to a proxy thread failed: {err}"),
        };
        let runtime = &self.runtimes[turn];
        // Registered with the worker's poller from here, so that its task is `serve`'s future
        // alone: one that took the socket first would keep what it took it with, idle or not.
        let on_worker = runtime.enter();
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(err) => return warn!("a proxy thread could not take a connection: {err}"),
        };
        drop(on_worker);
        runtime.spawn(serve(stream));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
        sync::oneshot,
    };

    #[tokio::test]
    async fn connections_are_served_in_turn_each_on_a_worker_thread() {
        let workers = Workers::start(2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut served_on = Vec::new();
        for _ in 0..3 {
            let mut client = TcpStream::connect(address).await.unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let (thread, on) = oneshot::channel();
            workers.serve(stream, move |mut stream| async move {
                // The socket works on the worker's own poller.
                stream.write_all(b"served").await.unwrap();
                let name = std::thread::current().name().map(str::to_owned);
                thread.send(name).unwrap();
            });
            let mut answer = [0u8; 6];
            client.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, b"served");
            served_on.push(on.await.unwrap().unwrap_or_default());
        }
        assert_eq!(
            served_on,
            ["cheops-proxy-0", "cheops-proxy-1", "cheops-proxy-0"]
        );
    }
}
