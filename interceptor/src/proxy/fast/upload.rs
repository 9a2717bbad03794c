//! A request body larger than the fast path reads whole, going on from the client's socket to
//! the instance's through a pipe (`splice`) once the head and the bytes read with it were
//! sent. It goes on while the answer's head is awaited and, when the instance answers before
//! it took the whole body, while that answer is relayed, as hyper's path does; a client that
//! ends its side before the body's end stops the exchange.
use std::{future::Future, io, pin::pin};

use tokio::net::TcpStream;

use super::splice::{Pipe, SpliceError};

/// A body on its way to the instance.
pub struct Upload {
    pipe: Pipe,
    /// What is still to come from the client.
    left: u64,
    ended: Option<Ended>,
}

/// How the body's way ended.
enum Ended {
    /// The instance took it all.
    Whole,
    /// The client closed its side, or failed, before the body's end.
    ClientCut,
    /// The instance took no more: it closed, or failed.
    InstanceStopped,
}

/// The client ended its side before the body's end: the exchange stops there.
#[derive(Debug)]
pub struct ClientCut;

impl Upload {
    /// `left` bytes of body still to come from the client.
    pub fn new(left: u64) -> io::Result<Upload> {
        Ok(Upload {
            pipe: Pipe::new()?,
            left,
            ended: (left == 0).then_some(Ended::Whole),
        })
    }

    /// Whether the instance took the whole body.
    pub fn whole(&self) -> bool {
        matches!(self.ended, Some(Ended::Whole))
    }

    /// Whether the client ended the body early.
    pub fn cut_by_client(&self) -> bool {
        matches!(self.ended, Some(Ended::ClientCut))
    }

    /// Runs `work` (reading the answer, relaying it) while the body goes from `client` to
    /// `instance`; its output, unless the client cut the body first.
    pub async fn alongside<F: Future>(
        &mut self,
        client: &TcpStream,
        instance: &TcpStream,
        work: F,
    ) -> Result<F::Output, ClientCut> {
        let mut work = pin!(work);
        loop {
            match self.ended {
                None => {}
                Some(Ended::ClientCut) => return Err(ClientCut),
                Some(_) => return Ok(work.await),
            }
            tokio::select! {
                biased;
                output = &mut work => return Ok(output),
                () = self.go_on(client, instance) => {}
            }
        }
    }

    /// Moves the body on until its way ends.
    async fn go_on(&mut self, client: &TcpStream, instance: &TcpStream) {
        self.ended = Some(
            match self.pipe.forward(client, instance, &mut self.left).await {
                Ok(()) => Ended::Whole,
                Err(SpliceError::FromEnded) => Ended::ClientCut,
                Err(SpliceError::To(error)) => {
                    // Its answer, if it sends one, says more; the request's line logs it.
                    tracing::debug!("the instance took no more of a request body: {error}");
                    Ended::InstanceStopped
                }
            },
        );
    }
}
