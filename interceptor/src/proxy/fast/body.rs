//! An answer's body relayed from the instance to the client: read by the framing the instance
//! gave it (its length, chunks, or up to the end of the connection) and written by the framing
//! the client was told (`answer::encode_answer`). Chunks are passed on as they come, under a size
//! line of their own: extensions and trailers go, as hyper drops them too. Every body goes
//! through user space, even a large one: moved in the kernel instead (`splice`), the 300 MiB
//! download of docs/benchmarks.md cost its client about 80 ms of CPU against about 45 with the
//! proxy's two copies, on the core the client shares with the origin, which is what limits it.
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::tcp::{ReadHalf, WriteHalf},
};

use super::answer::Framing;

/// At most what is gathered before it is written to the client; a larger piece of the body is
/// written as it lies in the read buffer, not copied.
const GATHERED: usize = 16 * 1024;
/// What the body is read with, once it is larger than what came with the head: reads of 256
/// KiB rather than 64 cost the proxy less CPU per byte (0.11 s against 0.15 for the 300 MiB
/// download) and its client too (about 46 ms against 58), with the download faster in turn.
const LARGE_READS: usize = 256 * 1024;
/// The longest chunk-size line or trailer line taken.
const MAX_LINE: usize = 4096;

/// Why a body could not be relayed to its end.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the instance sent a body that breaks its framing")]
    Framing,
    #[error("the instance closed the connection before the body's end")]
    InstanceClosed,
    #[error("reading from the instance: {0}")]
    Instance(std::io::Error),
    #[error("writing to the client: {0}")]
    Client(std::io::Error),
    #[error("the client ended the request's body before its end")]
    ClientCut,
}

/// Where reading a body stands.
enum Decoder {
    Length(u64),
    UntilClose,
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Done,
}

/// What the next bytes of the read buffer hold.
enum Step {
    /// Body bytes at `at..at + len`; everything before them was framing.
    Data { at: usize, len: usize },
    /// The first `consumed` bytes were framing; more must be read.
    More { consumed: usize },
    /// The body ended after `consumed` bytes.
    Done { consumed: usize },
}

impl Decoder {
    fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Length(0) => Decoder::Done,
            Framing::Length(len) => Decoder::Length(len),
            Framing::Chunked => Decoder::ChunkSize,
            Framing::UntilClose => Decoder::UntilClose,
        }
    }

    fn next(&mut self, input: &[u8]) -> Result<Step, RelayError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self {
                Decoder::Done => return Ok(Step::Done { consumed: at }),
                _ if rest.is_empty() => return Ok(Step::More { consumed: at }),
                Decoder::UntilClose => {
                    return Ok(Step::Data {
                        at,
                        len: rest.len(),
                    })
                }
                Decoder::Length(left) | Decoder::ChunkData(left) => {
                    let len = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= len as u64;
                    if *left == 0 {
                        *self = match self {
                            Decoder::Length(_) => Decoder::Done,
                            _ => Decoder::ChunkEnd,
                        };
                    }
                    return Ok(Step::Data { at, len });
                }
                Decoder::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        at += used;
                        *self = Decoder::Trailers;
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        at += used;
                        *self = Decoder::ChunkData(size);
                    }
                    Ok(httparse::Status::Partial) if rest.len() < MAX_LINE => {
                        return Ok(Step::More { consumed: at })
                    }
                    _ => return Err(RelayError::Framing),
                },
                Decoder::ChunkEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        at += 2;
                        *self = Decoder::ChunkSize;
                    }
                    [b'\r'] => return Ok(Step::More { consumed: at }),
                    _ => return Err(RelayError::Framing),
                },
                Decoder::Trailers => match rest.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        at += 2;
                        *self = Decoder::Done;
                    }
                    Some(end) => at += end + 2,
                    None if rest.len() < MAX_LINE => return Ok(Step::More { consumed: at }),
                    None => return Err(RelayError::Framing),
                },
            }
        }
    }
}

/// How a relayed body ended.
pub struct Relayed {
    /// Whether the instance's connection can carry the next request: the body ended by its
    /// framing, with nothing after it.
    pub instance_reusable: bool,
}

/// Writes `out` (the answer's head, and what else was gathered) and the body that follows the
/// head in `read[start..]` and on `instance`, framed as `to`. `read` is the instance's buffer.
pub async fn relay(
    instance: &mut ReadHalf<'_>,
    client: &mut WriteHalf<'_>,
    out: &mut Vec<u8>,
    read: &mut Vec<u8>,
    start: usize,
    from: Framing,
    to: Framing,
) -> Result<Relayed, RelayError> {
    let mut decoder = Decoder::new(from);
    let mut at = start;
    loop {
        match decoder.next(&read[at..])? {
            Step::Data { at: skip, len } => {
                let data = at + skip..at + skip + len;
                at = data.end;
                if to == Framing::Chunked {
                    out.extend_from_slice(format!("{len:X}\r\n").as_bytes());
                }
                if out.len() + len <= GATHERED {
                    out.extend_from_slice(&read[data]);
                } else {
                    flush(client, out).await?;
                    client
                        .write_all(&read[data])
                        .await
                        .map_err(RelayError::Client)?;
                }
                if to == Framing::Chunked {
                    out.extend_from_slice(b"\r\n");
                }
            }
            Step::More { consumed } => {
                at += consumed;
                flush(client, out).await?;
                read.drain(..at);
                at = 0;
                if read.capacity() - read.len() < LARGE_READS / 2 {
                    read.reserve(LARGE_READS);
                }
                let len = instance
                    .read_buf(read)
                    .await
                    .map_err(RelayError::Instance)?;
                if len == 0 {
                    if !matches!(decoder, Decoder::UntilClose) {
                        return Err(RelayError::InstanceClosed);
                    }
                    decoder = Decoder::Done;
                }
            }
            Step::Done { consumed } => {
                at += consumed;
                if to == Framing::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                flush(client, out).await?;
                return Ok(Relayed {
                    instance_reusable: from != Framing::UntilClose && at == read.len(),
                });
            }
        }
    }
}

async fn flush(client: &mut WriteHalf<'_>, out: &mut Vec<u8>) -> Result<(), RelayError> {
    if !out.is_empty() {
        client.write_all(out).await.map_err(RelayError::Client)?;
        out.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every body byte the decoder finds in `input` fed `piece` bytes at a time, and whether
    /// it saw the end.
    fn decoded(framing: Framing, input: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut decoder = Decoder::new(framing);
        let mut body = Vec::new();
        let mut buffer = Vec::new();
        for bytes in input.chunks(piece) {
            buffer.extend_from_slice(bytes);
            let mut at = 0;
            loop {
                match decoder.next(&buffer[at..]).unwrap() {
                    Step::Data { at: skip, len } => {
                        body.extend_from_slice(&buffer[at + skip..at + skip + len]);
                        at += skip + len;
                    }
                    Step::More { consumed } => {
                        buffer.drain(..at + consumed);
                        break;
                    }
                    Step::Done { .. } => return (body, true),
                }
            }
        }
        (body, false)
    }

    #[test]
    fn chunks_give_their_data_whatever_the_reads_and_end_after_the_trailers() {
        let chunked = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for piece in [1, 2, 3, 7, chunked.len()] {
            assert_eq!(
                decoded(Framing::Chunked, chunked, piece),
                (b"hello, world".to_vec(), true),
                "read {piece} bytes at a time"
            );
        }
        let unfinished = decoded(Framing::Chunked, b"5\r\nhello\r\n", 4);
        assert_eq!(unfinished, (b"hello".to_vec(), false));
        assert!(Decoder::new(Framing::Chunked).next(b"zz\r\n").is_err());
        // A chunk's data not followed by its line end.
        assert!(Decoder::ChunkEnd.next(b"XX").is_err());
    }

    #[test]
    fn a_length_ends_the_body_and_leaves_what_follows() {
        assert_eq!(
            decoded(Framing::Length(5), b"helloNEXT", 3),
            (b"hello".to_vec(), true)
        );
        assert!(matches!(
            Decoder::new(Framing::Length(0)).next(b""),
            Ok(Step::Done { consumed: 0 })
        ));
    }
}
