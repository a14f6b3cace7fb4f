//! HTTP/1.1 message-body framing, sans-IO: given the bytes that follow a head, how many belong
//! to this body and whether it has ended (RFC 9112 §6, §7.1). Bodies pass through unchanged
//! (a chunked body stays chunked), so the proxy only has to find where each one ends, as
//! haproxy does; nothing is decoded or copied here. Touches nothing but its own state.

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body: a request without Content-Length or Transfer-Encoding; a response to HEAD, or
    /// 1xx, 204, 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (a response with neither header).
    UntilClose,
}

/// Longest chunk-size line (size and extensions) and trailer section accepted.
const MAX_LINE: u32 = 4096;
const MAX_TRAILERS: u32 = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed chunked body: {0}")]
pub struct FramingError(&'static str);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Length(u64),
    /// Chunk-size digits so far (`digits` of them).
    Size {
        value: u64,
        digits: u8,
    },
    /// Chunk extensions, up to the line's LF.
    Ext {
        value: u64,
        len: u32,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one. `line`: bytes on this line.
    Trailers {
        line: u32,
        total: u32,
    },
    UntilClose,
    Done,
}

/// Where a body being passed through stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Body(State);

impl Body {
    pub fn new(f: Framing) -> Self {
        Body(match f {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size {
                value: 0,
                digits: 0,
            },
            Framing::UntilClose => State::UntilClose,
        })
    }

    /// The body has ended; what follows belongs to the next message.
    pub fn is_done(&self) -> bool {
        self.0 == State::Done
    }

    /// Whether the sender closing now ends the body properly (else it was cut short).
    pub fn ends_at_close(&self) -> bool {
        matches!(self.0, State::UntilClose | State::Done)
    }

    /// Takes the body's bytes from the front of `buf`: returns how many belong to it (all of
    /// `buf` unless the body ends inside it).
    pub fn advance(&mut self, buf: &[u8]) -> Result<usize, FramingError> {
        let mut at = 0;
        while at < buf.len() {
            match self.0 {
                State::Done => return Ok(at),
                State::UntilClose => return Ok(buf.len()),
                State::Length(n) | State::Data(n) => {
                    let take = n.min((buf.len() - at) as u64);
                    at += take as usize;
                    let left = n - take;
                    self.0 = match (self.0, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), _) => State::Length(left),
                        (_, 0) => State::DataCr,
                        _ => State::Data(left),
                    };
                }
                s => {
                    self.0 = step(s, buf[at])?;
                    at += 1;
                }
            }
        }
        Ok(at)
    }
}

/// One byte of a chunked body's framing (sizes, extensions, CRLFs, trailers).
fn step(s: State, b: u8) -> Result<State, FramingError> {
    Ok(match s {
        State::Size { value, digits } => match b {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                if digits >= 15 {
                    return Err(FramingError("chunk size too large"));
                }
                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                State::Size {
                    value: value << 4 | d,
                    digits: digits + 1,
                }
            }
            _ if digits == 0 => return Err(FramingError("chunk size expected")),
            b';' | b' ' | b'\t' => State::Ext { value, len: 0 },
            b'\r' => State::SizeLf { value },
            b'\n' => after_size(value),
            _ => return Err(FramingError("bad character in chunk size")),
        },
        State::Ext { value, len } => match b {
            b'\n' => after_size(value),
            _ if len >= MAX_LINE => return Err(FramingError("chunk extension too long")),
            _ => State::Ext {
                value,
                len: len + 1,
            },
        },
        State::SizeLf { value } => match b {
            b'\n' => after_size(value),
            _ => return Err(FramingError("LF expected after chunk size")),
        },
        State::DataCr => match b {
            b'\r' => State::DataLf,
            b'\n' => chunk_start(),
            _ => return Err(FramingError("CRLF expected after chunk data")),
        },
        State::DataLf => match b {
            b'\n' => chunk_start(),
            _ => return Err(FramingError("LF expected after chunk data")),
        },
        State::Trailers { line, total } => {
            if total >= MAX_TRAILERS {
                return Err(FramingError("trailer section too long"));
            }
            match b {
                b'\n' if line == 0 => State::Done,
                b'\n' => State::Trailers {
                    line: 0,
                    total: total + 1,
                },
                b'\r' => State::Trailers {
                    line,
                    total: total + 1,
                },
                _ => State::Trailers {
                    line: line + 1,
                    total: total + 1,
                },
            }
        }
        // Bulk states are handled by `advance`.
        s @ (State::Length(_) | State::Data(_) | State::UntilClose | State::Done) => s,
    })
}

fn chunk_start() -> State {
    State::Size {
        value: 0,
        digits: 0,
    }
}

fn after_size(value: u64) -> State {
    if value == 0 {
        State::Trailers { line: 0, total: 0 }
    } else {
        State::Data(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `wire` in pieces split at `cuts`; returns the body's length in `wire`.
    fn end_of(f: Framing, wire: &[u8], cuts: &[usize]) -> Result<Option<usize>, FramingError> {
        let mut b = Body::new(f);
        if b.is_done() {
            return Ok(Some(0));
        }
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        bounds.push(wire.len());
        bounds.sort_unstable();
        let mut at = 0;
        for end in bounds {
            if end <= at {
                continue;
            }
            at += b.advance(&wire[at..end])?;
            if b.is_done() {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    const CHUNKED: &[u8] =
        b"5\r\nhello\r\nA;name=v\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\nGET / HTTP/1.1\r\n";

    #[test]
    fn a_chunked_body_ends_after_its_trailers() {
        let end = CHUNKED.len() - b"GET / HTTP/1.1\r\n".len();
        assert_eq!(end_of(Framing::Chunked, CHUNKED, &[]), Ok(Some(end)));
        // Without trailers, and with bare LFs (accepted, as most servers do).
        let plain = b"3\r\nabc\r\n0\r\n\r\nnext";
        assert_eq!(
            end_of(Framing::Chunked, plain, &[]),
            Ok(Some(plain.len() - 4))
        );
        let lf = b"3\nabc\n0\n\nnext";
        assert_eq!(end_of(Framing::Chunked, lf, &[]), Ok(Some(lf.len() - 4)));
    }

    #[test]
    fn lengths_and_empty_bodies() {
        assert_eq!(end_of(Framing::Length(4), b"abcdef", &[]), Ok(Some(4)));
        assert_eq!(end_of(Framing::Length(0), b"abc", &[]), Ok(Some(0)));
        assert_eq!(end_of(Framing::Empty, b"abc", &[]), Ok(Some(0)));
        assert_eq!(end_of(Framing::Length(10), b"abc", &[]), Ok(None));
        let mut b = Body::new(Framing::UntilClose);
        assert_eq!(b.advance(b"abc"), Ok(3));
        assert!(!b.is_done() && b.ends_at_close());
        assert!(!Body::new(Framing::Length(3)).ends_at_close());
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX",
            b"5\rX",
            b"1234567890abcdef0\r\n",
        ] {
            assert!(end_of(Framing::Chunked, bad, &[]).is_err(), "{bad:?}");
        }
        let long_ext = [b"1;".as_slice(), &[b'a'; 5000]].concat();
        assert!(end_of(Framing::Chunked, &long_ext, &[]).is_err());
    }

    proptest! {
        /// However the bytes arrive, the body ends at the same place.
        #[test]
        fn split_anywhere_ends_at_the_same_byte(cuts in proptest::collection::vec(0usize..64, 0..12)) {
            let whole = end_of(Framing::Chunked, CHUNKED, &[]).unwrap();
            prop_assert_eq!(end_of(Framing::Chunked, CHUNKED, &cuts).unwrap(), whole);
        }
    }
}
