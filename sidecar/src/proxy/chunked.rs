//! The chunked transfer coding (RFC 9112 §7.1), read as it streams: a small state
//! machine that tells framing bytes (sizes, extensions, CRLFs, trailers) from data, so a
//! chunked body is relayed as it came, its data counted, and a malformed one stopped
//! before more of it reaches the upstream. No allocation, no copy; fuzzed.

/// Longest chunk-size line (size and extensions) accepted.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size: {0}")]
    Size(&'static str),
    #[error("chunk size line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    #[error("invalid trailer section: {0}")]
    Trailer(&'static str),
    #[error("trailer section larger than {0} bytes")]
    TrailersTooLarge(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits; `seen`: at least one.
    Size {
        seen: bool,
    },
    /// After the size: extensions (or whitespace) up to CR.
    Ext,
    /// CR of the size line seen; LF expected.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After data: CR, then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// CR of a trailer line seen.
    TrailerLf,
    /// CR of the final empty line seen.
    EndLf,
    Done,
}

/// One step of decoding: how many input bytes were consumed, and whether they were data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub data: bool,
}

/// A chunked body decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    /// Size being read, then data left in the current chunk.
    size: u64,
    line: usize,
    trailer_bytes: usize,
    max_trailers: usize,
}

impl Decoder {
    /// `max_trailers`: bound on the trailer section's size.
    pub fn new(max_trailers: usize) -> Decoder {
        Decoder {
            state: State::Size { seen: false },
            size: 0,
            line: 0,
            trailer_bytes: 0,
            max_trailers,
        }
    }

    /// The final empty line has been read: the body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consume the next run of `input`: either chunk data (as much as is available) or
    /// framing (up to where data starts or the body ends). `consumed == 0` only for empty
    /// input or when done.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        if self.state == State::Data {
            let n = usize::try_from(self.size)
                .unwrap_or(usize::MAX)
                .min(input.len());
            // n ≤ size: no underflow.
            self.size -= n as u64;
            if self.size == 0 {
                self.state = State::DataCr;
            }
            return Ok(Step {
                consumed: n,
                data: true,
            });
        }
        let mut i = 0;
        while i < input.len() && !matches!(self.state, State::Data | State::Done) {
            self.byte(input[i])?;
            i += 1;
        }
        Ok(Step {
            consumed: i,
            data: false,
        })
    }

    fn byte(&mut self, b: u8) -> Result<(), ChunkError> {
        match self.state {
            State::Size { seen } => {
                self.line += 1;
                if self.line > MAX_LINE {
                    return Err(ChunkError::LineTooLong);
                }
                if let Some(d) = hex(b) {
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                        .ok_or(ChunkError::Size("overflow"))?;
                    self.state = State::Size { seen: true };
                } else if !seen {
                    return Err(ChunkError::Size("missing size digit"));
                } else if b == b'\r' {
                    self.state = State::SizeLf;
                } else if b == b';' || b == b' ' || b == b'\t' {
                    self.state = State::Ext;
                } else {
                    return Err(ChunkError::Size("unexpected byte after the size"));
                }
            }
            State::Ext => {
                self.line += 1;
                if self.line > MAX_LINE {
                    return Err(ChunkError::LineTooLong);
                }
                match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
                    _ => return Err(ChunkError::Size("control byte in a chunk extension")),
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::Size("CR not followed by LF"));
                }
                self.line = 0;
                self.state = if self.size == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                };
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError::MissingCrlf);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                self.state = State::Size { seen: false };
            }
            State::TrailerStart => {
                self.count_trailer()?;
                match b {
                    b'\r' => self.state = State::EndLf,
                    // obs-fold, or a line starting with whitespace.
                    b' ' | b'\t' => return Err(ChunkError::Trailer("line starts with whitespace")),
                    b'\n' => return Err(ChunkError::Trailer("bare LF")),
                    _ => self.state = State::Trailer,
                }
            }
            State::Trailer => {
                self.count_trailer()?;
                match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
                    _ => return Err(ChunkError::Trailer("control byte or bare LF")),
                }
            }
            State::TrailerLf => {
                self.count_trailer()?;
                if b != b'\n' {
                    return Err(ChunkError::Trailer("CR not followed by LF"));
                }
                self.state = State::TrailerStart;
            }
            State::EndLf => {
                if b != b'\n' {
                    return Err(ChunkError::Trailer("CR not followed by LF"));
                }
                self.state = State::Done;
            }
            State::Data | State::Done => {}
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes = self.trailer_bytes.saturating_add(1);
        if self.trailer_bytes > self.max_trailers {
            return Err(ChunkError::TrailersTooLarge(self.max_trailers));
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decode a whole body given in pieces; returns the data and the bytes consumed. Used by
/// tests and the fuzz target.
pub fn decode_all<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    max_trailers: usize,
) -> Result<(Vec<u8>, usize, bool), ChunkError> {
    let mut d = Decoder::new(max_trailers);
    let mut data = Vec::new();
    let mut used = 0usize;
    for mut piece in pieces {
        while !piece.is_empty() && !d.is_done() {
            let s = d.step(piece)?;
            if s.data {
                data.extend_from_slice(&piece[..s.consumed]);
            }
            used += s.consumed;
            piece = &piece[s.consumed..];
        }
    }
    Ok((data, used, d.is_done()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_sizes_extensions_and_trailers_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n6 ; x\r\n world\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\nNEXT";
        for split in 0..body.len() {
            let (a, b) = body.split_at(split);
            let (data, used, done) = decode_all([a, b], 1024).unwrap();
            assert_eq!(data, b"hello world0123456789");
            assert!(done);
            assert_eq!(used, body.len() - 4, "stops at the end of the body");
        }
    }

    #[test]
    fn refuses_what_could_be_read_two_ways() {
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"fffffffffffffffff1\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\n fold\r\n\r\n",
            b"-1\r\n",
            b"5\x00\r\n",
        ] {
            assert!(
                decode_all([bad], 1024).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            decode_all([&b"0\r\nX: 12345\r\n\r\n"[..]], 8),
            Err(ChunkError::TrailersTooLarge(8))
        );
        // Leading zeros are allowed, but not without end.
        let zeros = vec![b'0'; 5000];
        assert_eq!(decode_all([&zeros[..]], 8), Err(ChunkError::LineTooLong));
    }

    #[test]
    fn incomplete_bodies_are_not_done() {
        let (data, _, done) = decode_all([&b"5\r\nhel"[..]], 64).unwrap();
        assert_eq!((data.as_slice(), done), (&b"hel"[..], false));
    }
}
