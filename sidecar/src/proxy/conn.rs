//! A socket with a read buffer that is allocated only while there is something to read:
//! grown on demand (1 KiB, doubling to 64 KiB for bodies that keep coming) and dropped
//! when the connection goes idle, so a thousand quiet keep-alive connections cost no
//! buffers at all.

use std::io::{self, IoSlice};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Small enough for glibc's per-thread cache (≤ 1,032 bytes): a request's buffer costs
/// next to nothing to take and give back, and one read holds most heads.
const FIRST_READ: usize = 1024;
const MAX_READ: usize = 64 * 1024;

pub struct Conn {
    pub stream: TcpStream,
    /// Bytes read and not yet consumed.
    pub buf: BytesMut,
    /// Size of the next read.
    next: usize,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
            next: FIRST_READ,
        }
    }

    /// Wait until the socket is readable (holding no buffer), then read what is there.
    /// `Ok(0)`: the peer closed.
    pub async fn fill(&mut self) -> io::Result<usize> {
        loop {
            self.stream.readable().await?;
            let spare = self.buf.capacity() - self.buf.len();
            if spare < FIRST_READ / 2 {
                self.buf.reserve(self.next);
            }
            let spare = self.buf.capacity() - self.buf.len();
            match self.stream.try_read_buf(&mut self.buf) {
                Ok(n) => {
                    // A full read: the sender has more; read more at a time.
                    if n == spare {
                        self.next = (self.next * 2).min(MAX_READ);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A connection whose first bytes were already read (protocol detection).
    pub fn with_buffer(stream: TcpStream, buf: BytesMut) -> Conn {
        Conn {
            stream,
            buf,
            next: FIRST_READ,
        }
    }

    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n);
    }

    /// Idle: give the buffer back (only when nothing unread is in it).
    pub fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.next = FIRST_READ;
        }
    }
}

/// Below this, the start of a body is copied after its head and sent with one `send`;
/// above, head and body go out with one `writev`.
const COPY_MAX: usize = 2048;

/// Write `head` then `body` with one system call where the kernel takes it all; `head`
/// is a scratch buffer that may be appended to.
pub async fn write_head(w: &mut TcpStream, head: &mut Vec<u8>, body: &[u8]) -> io::Result<()> {
    if body.len() <= COPY_MAX {
        head.extend_from_slice(body);
        return w.write_all(head).await;
    }
    write_two(w, head, body).await
}

/// Write `a` then `b` with as few system calls as the kernel allows.
pub async fn write_two(w: &mut TcpStream, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = if a.is_empty() {
            w.write(b).await?
        } else if b.is_empty() {
            w.write(a).await?
        } else {
            w.write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
                .await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}
