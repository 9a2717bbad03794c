//! A request body's bytes moved from the client's socket to the instance's inside the kernel:
//! splice(2) from the first into a pipe, then from the pipe into the second, never through user
//! space (answers go through it: `body`). Both sockets stay non-blocking; tokio's readiness
//! says when to try again. The pipe is taken only when it is empty (a full pipe and an empty
//! socket give the same `EAGAIN`, and only the socket's must clear its readiness), and what it
//! holds is counted, so that a move stopped at an `.await` goes on where it stood.
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use tokio::{io::Interest, net::TcpStream};

/// What the pipe is asked to hold: fewer system calls per byte than its default 64 KiB. The
/// kernel keeps a smaller one when it refuses (`/proc/sys/fs/pipe-max-size`).
const PIPE_BYTES: libc::c_int = 1024 * 1024;

/// Why bytes could not be moved to their end.
#[derive(Debug)]
pub enum SpliceError {
    /// The socket read from ended first, or reading from it failed.
    FromEnded,
    /// Writing to the second socket failed.
    To(io::Error),
}

/// A pipe between two sockets, and how many bytes it holds.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    held: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into `fds`, nothing else.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the two descriptors were just opened, and belong to nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int and changes only the pipe's capacity; a refusal
        // leaves the pipe as it was, which still works.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        Ok(Pipe {
            read,
            write,
            held: 0,
        })
    }

    /// Moves `left` bytes from `from` to `to`, counting down `left` as they are taken.
    pub async fn forward(
        &mut self,
        from: &TcpStream,
        to: &TcpStream,
        left: &mut u64,
    ) -> Result<(), SpliceError> {
        loop {
            if self.held == 0 {
                if *left == 0 {
                    return Ok(());
                }
                match self.fill(from, *left).await {
                    Ok(0) | Err(_) => return Err(SpliceError::FromEnded),
                    Ok(taken) => *left -= taken as u64,
                }
            }
            self.drain(to).await.map_err(SpliceError::To)?;
        }
    }

    /// Takes what `from` has, up to `at_most` bytes, once the pipe is empty: how many (0: the
    /// end of `from`).
    async fn fill(&mut self, from: &TcpStream, at_most: u64) -> io::Result<usize> {
        debug_assert_eq!(self.held, 0, "the pipe is filled only when empty");
        let len = usize::try_from(at_most)
            .map_or(PIPE_BYTES as usize, |len| len.min(PIPE_BYTES as usize));
        let write = self.write.as_fd();
        let taken = from
            .async_io(Interest::READABLE, || splice(from.as_fd(), write, len))
            .await?;
        self.held = taken;
        Ok(taken)
    }

    /// Writes all the pipe holds to `to`.
    async fn drain(&mut self, to: &TcpStream) -> io::Result<()> {
        while self.held > 0 {
            let read = self.read.as_fd();
            let held = self.held;
            let written = to
                .async_io(Interest::WRITABLE, || splice(read, to.as_fd(), held))
                .await?;
            self.held -= written;
        }
        Ok(())
    }
}

/// One splice(2) of up to `len` bytes, without waiting on either end.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the call's length (borrowed); null offsets are
    // what pipes and sockets take.
    let moved = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(moved).map_err(|_| io::Error::last_os_error())
}
