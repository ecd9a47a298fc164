//! A pure, incremental checker of one direction of a ZMTP 3.x byte stream (greeting, then
//! frames): it reads only headers, skips bodies by counting, keeps no buffer, and says whether
//! the bytes seen so far may be forwarded (see docs/protocol.md, "Transport guard").

use thiserror::Error;

/// Length of the ZMTP 3.x greeting.
pub const GREETING_LEN: usize = 64;
/// The only security mechanism faas speaks, as padded in the greeting.
const NULL_MECHANISM: &[u8; 20] = b"NULL\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

const FLAG_MORE: u8 = 0b001;
const FLAG_LONG: u8 = 0b010;
const FLAG_COMMAND: u8 = 0b100;

/// Why a stream was refused (the connection is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Violation {
    #[error("not a ZMTP greeting (byte {at} of the signature is {byte:#04x})")]
    Signature { at: usize, byte: u8 },
    #[error("unsupported ZMTP major version {0} (only 3 is spoken)")]
    Version(u8),
    #[error("unsupported security mechanism (only NULL is spoken)")]
    Mechanism,
    #[error("invalid as-server byte {0:#04x} in the greeting")]
    AsServer(u8),
    #[error("reserved frame flag bits set ({0:#04x})")]
    ReservedFlags(u8),
    #[error("command frame with the MORE flag")]
    CommandMore,
    #[error("frame of {len} bytes announced, limit {max}")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("message of {total}+ bytes, limit {max}")]
    MessageTooLarge { total: u64, max: u64 },
}

/// Size limits applied to one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (data or command).
    pub frame: u64,
    /// Largest sum of the data frames of one multipart message.
    pub message: u64,
}

impl Limits {
    /// Each frame up to `max_message_bytes`; a multipart message up to
    /// [`MESSAGE_FRAMES`] times that (a `tasks` batch or a `report` carries several blob frames,
    /// each of which stays under the payload limits).
    pub fn from_max_message_bytes(max: u64) -> Self {
        Limits {
            frame: max,
            message: max.saturating_mul(MESSAGE_FRAMES),
        }
    }
}

/// How many maximal frames one multipart message may add up to.
pub const MESSAGE_FRAMES: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At greeting byte `at`.
    Greeting { at: usize },
    /// Expecting a frame's flags byte.
    Flags,
    /// Reading a frame's length: `got` of `need` bytes, big-endian into `len`.
    Length {
        flags: u8,
        need: u8,
        got: u8,
        len: u64,
    },
    /// Skipping `left` body bytes of a frame.
    Body { left: u64 },
    /// A violation was found; nothing more is accepted.
    Refused(Violation),
}

/// The checker; feed it every byte of the direction, in order.
#[derive(Debug, Clone)]
pub struct Inspector {
    limits: Limits,
    state: State,
    /// Sum of the data frames of the message being received.
    message: u64,
}

impl Inspector {
    pub fn new(limits: Limits) -> Self {
        Inspector {
            limits,
            state: State::Greeting { at: 0 },
            message: 0,
        }
    }

    /// Checks `bytes` (the next bytes of the stream). `Ok` means all of them may be forwarded;
    /// after an `Err` every later call returns the same error.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Refused(v) => return Err(v),
                State::Body { left } => {
                    let avail = (bytes.len() - i) as u64;
                    let take = left.min(avail);
                    // `take` <= the remaining slice length, so it fits in usize.
                    i += take as usize;
                    self.state = if take == left {
                        State::Flags
                    } else {
                        State::Body { left: left - take }
                    };
                }
                _ => {
                    let b = bytes[i];
                    i += 1;
                    if let Err(v) = self.step(b) {
                        self.state = State::Refused(v);
                        return Err(v);
                    }
                }
            }
        }
        match self.state {
            State::Refused(v) => Err(v),
            _ => Ok(()),
        }
    }

    /// True once the greeting has been fully accepted.
    pub fn greeted(&self) -> bool {
        !matches!(self.state, State::Greeting { .. } | State::Refused(_))
    }

    /// One header byte (greeting, flags or length).
    fn step(&mut self, b: u8) -> Result<(), Violation> {
        match self.state {
            State::Greeting { at } => {
                check_greeting_byte(at, b)?;
                self.state = if at + 1 == GREETING_LEN {
                    State::Flags
                } else {
                    State::Greeting { at: at + 1 }
                };
            }
            State::Flags => {
                if b & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
                    return Err(Violation::ReservedFlags(b));
                }
                if b & FLAG_COMMAND != 0 && b & FLAG_MORE != 0 {
                    return Err(Violation::CommandMore);
                }
                let need = if b & FLAG_LONG != 0 { 8 } else { 1 };
                self.state = State::Length {
                    flags: b,
                    need,
                    got: 0,
                    len: 0,
                };
            }
            State::Length {
                flags,
                need,
                got,
                len,
            } => {
                let len = (len << 8) | u64::from(b);
                let got = got + 1;
                if got < need {
                    self.state = State::Length {
                        flags,
                        need,
                        got,
                        len,
                    };
                } else {
                    self.frame(flags, len)?;
                }
            }
            State::Body { .. } | State::Refused(_) => {
                unreachable!("feed handles bodies and refusals")
            }
        }
        Ok(())
    }

    /// A complete frame header: checks the limits before any body byte is forwarded.
    fn frame(&mut self, flags: u8, len: u64) -> Result<(), Violation> {
        if len > self.limits.frame {
            return Err(Violation::FrameTooLarge {
                len,
                max: self.limits.frame,
            });
        }
        if flags & FLAG_COMMAND == 0 {
            let total = self.message.saturating_add(len);
            if total > self.limits.message {
                return Err(Violation::MessageTooLarge {
                    total,
                    max: self.limits.message,
                });
            }
            self.message = if flags & FLAG_MORE != 0 { total } else { 0 };
        }
        self.state = if len == 0 {
            State::Flags
        } else {
            State::Body { left: len }
        };
        Ok(())
    }
}

/// Checks greeting byte `at` (0-based): signature `FF <8 any> 7F`, major version 3, any minor,
/// mechanism "NULL" zero-padded to 20 bytes, as-server 0 or 1, filler ignored.
fn check_greeting_byte(at: usize, b: u8) -> Result<(), Violation> {
    match at {
        0 if b != 0xFF => Err(Violation::Signature { at, byte: b }),
        9 if b != 0x7F => Err(Violation::Signature { at, byte: b }),
        10 if b != 3 => Err(Violation::Version(b)),
        12..=31 if b != NULL_MECHANISM[at - 12] => Err(Violation::Mechanism),
        32 if b > 1 => Err(Violation::AsServer(b)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1000;

    fn limits() -> Limits {
        Limits {
            frame: MAX,
            message: 2 * MAX,
        }
    }

    /// A valid greeting as the zeromq crate and libzmq send it.
    fn greeting() -> Vec<u8> {
        let mut g = vec![0u8; GREETING_LEN];
        g[0] = 0xFF;
        g[9] = 0x7F;
        g[10] = 3;
        g[11] = 1;
        g[12..16].copy_from_slice(b"NULL");
        g
    }

    fn short(flags: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![flags, body.len() as u8];
        f.extend_from_slice(body);
        f
    }

    fn long_header(flags: u8, len: u64) -> Vec<u8> {
        let mut f = vec![flags | FLAG_LONG];
        f.extend_from_slice(&len.to_be_bytes());
        f
    }

    fn long(flags: u8, len: usize) -> Vec<u8> {
        let mut f = long_header(flags, len as u64);
        f.extend(std::iter::repeat_n(0xAB, len));
        f
    }

    fn ready() -> Vec<u8> {
        let mut body = vec![5u8];
        body.extend_from_slice(b"READY");
        body.push(11);
        body.extend_from_slice(b"Socket-Type");
        body.extend_from_slice(&6u32.to_be_bytes());
        body.extend_from_slice(b"DEALER");
        short(FLAG_COMMAND, &body)
    }

    fn with_greeting(rest: &[&[u8]]) -> Vec<u8> {
        let mut v = greeting();
        for r in rest {
            v.extend_from_slice(r);
        }
        v
    }

    fn check(stream: &[u8]) -> Result<(), Violation> {
        Inspector::new(limits()).feed(stream)
    }

    #[test]
    fn table() {
        let big = MAX as usize;
        let cases: Vec<(&str, Vec<u8>, Result<(), Violation>)> = vec![
            ("greeting only", greeting(), Ok(())),
            ("half a greeting", greeting()[..30].to_vec(), Ok(())),
            (
                "ready + short frames",
                with_greeting(&[&ready(), &short(0, b"hello"), &short(0, b"")]),
                Ok(()),
            ),
            (
                "multipart",
                with_greeting(&[
                    &short(FLAG_MORE, b"id"),
                    &short(FLAG_MORE, b""),
                    &short(0, b"x"),
                ]),
                Ok(()),
            ),
            (
                "long frame at the limit",
                with_greeting(&[&long(0, big)]),
                Ok(()),
            ),
            (
                "long frame at limit+1",
                with_greeting(&[&long_header(0, MAX + 1)]),
                Err(Violation::FrameTooLarge {
                    len: MAX + 1,
                    max: MAX,
                }),
            ),
            (
                "2^62 announced",
                with_greeting(&[&long_header(0, 1 << 62)]),
                Err(Violation::FrameTooLarge {
                    len: 1 << 62,
                    max: MAX,
                }),
            ),
            (
                "u64::MAX announced",
                with_greeting(&[&long_header(FLAG_MORE, u64::MAX)]),
                Err(Violation::FrameTooLarge {
                    len: u64::MAX,
                    max: MAX,
                }),
            ),
            (
                "oversized command",
                with_greeting(&[&long_header(FLAG_COMMAND, MAX + 1)]),
                Err(Violation::FrameTooLarge {
                    len: MAX + 1,
                    max: MAX,
                }),
            ),
            (
                "message sum at its limit",
                with_greeting(&[&long(FLAG_MORE, big), &long(0, big)]),
                Ok(()),
            ),
            (
                "message sum past its limit",
                with_greeting(&[
                    &long(FLAG_MORE, big),
                    &long(FLAG_MORE, big),
                    &short(0, b"x"),
                ]),
                Err(Violation::MessageTooLarge {
                    total: 2 * MAX + 1,
                    max: 2 * MAX,
                }),
            ),
            (
                "sum resets after the last frame",
                with_greeting(&[&long(FLAG_MORE, big), &long(0, big), &long(0, big)]),
                Ok(()),
            ),
            (
                "commands do not count towards a message",
                with_greeting(&[
                    &long(FLAG_COMMAND, big),
                    &long(FLAG_MORE, big),
                    &long(0, big),
                ]),
                Ok(()),
            ),
            (
                "command with MORE",
                with_greeting(&[&short(FLAG_COMMAND | FLAG_MORE, b"x")]),
                Err(Violation::CommandMore),
            ),
            (
                "reserved flag bits",
                with_greeting(&[&short(0x08, b"x")]),
                Err(Violation::ReservedFlags(0x08)),
            ),
            (
                "bad first byte",
                {
                    let mut g = greeting();
                    g[0] = b'G';
                    g
                },
                Err(Violation::Signature { at: 0, byte: b'G' }),
            ),
            (
                "bad signature end",
                {
                    let mut g = greeting();
                    g[9] = 0;
                    g
                },
                Err(Violation::Signature { at: 9, byte: 0 }),
            ),
            (
                "ZMTP 2",
                {
                    let mut g = greeting();
                    g[10] = 1;
                    g
                },
                Err(Violation::Version(1)),
            ),
            (
                "ZMTP 4",
                {
                    let mut g = greeting();
                    g[10] = 4;
                    g
                },
                Err(Violation::Version(4)),
            ),
            (
                "CURVE",
                {
                    let mut g = greeting();
                    g[12..17].copy_from_slice(b"CURVE");
                    g
                },
                Err(Violation::Mechanism),
            ),
            (
                "NULL without zero padding",
                {
                    let mut g = greeting();
                    g[16] = b'X';
                    g
                },
                Err(Violation::Mechanism),
            ),
            (
                "as-server 2",
                {
                    let mut g = greeting();
                    g[32] = 2;
                    g
                },
                Err(Violation::AsServer(2)),
            ),
            (
                "an HTTP request",
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                Err(Violation::Signature { at: 0, byte: b'G' }),
            ),
        ];
        for (name, stream, want) in cases {
            assert_eq!(check(&stream), want, "{name}");
        }
    }

    /// Every split of a stream into two reads (and byte-by-byte) gives the same verdict as
    /// one read.
    #[test]
    fn split_reads_at_every_boundary() {
        let streams = [
            with_greeting(&[
                &ready(),
                &short(FLAG_MORE, b"id"),
                &long(FLAG_MORE, 300),
                &long(0, MAX as usize),
                &short(0, b""),
            ]),
            with_greeting(&[&ready(), &short(0, b"ok"), &long_header(0, 1 << 62)]),
            with_greeting(&[&long(FLAG_MORE, 999), &long(FLAG_MORE, 999), &long(0, 3)]),
        ];
        for stream in &streams {
            let whole = check(stream);
            for cut in 0..=stream.len() {
                let mut ins = Inspector::new(limits());
                let first = ins.feed(&stream[..cut]);
                let verdict = first.and_then(|()| ins.feed(&stream[cut..]));
                assert_eq!(verdict, whole, "cut at {cut}");
            }
            let mut ins = Inspector::new(limits());
            let bytewise = stream
                .iter()
                .try_for_each(|b| ins.feed(std::slice::from_ref(b)));
            assert_eq!(bytewise, whole, "byte by byte");
        }
    }

    #[test]
    fn a_refused_stream_stays_refused() {
        let mut ins = Inspector::new(limits());
        let v = Violation::Signature { at: 0, byte: 0 };
        assert_eq!(ins.feed(&[0]), Err(v));
        assert_eq!(ins.feed(&greeting()), Err(v));
        assert_eq!(ins.feed(&[]), Err(v));
        assert!(!ins.greeted());
    }

    #[test]
    fn greeted_after_64_bytes() {
        let mut ins = Inspector::new(limits());
        let g = greeting();
        assert_eq!(ins.feed(&g[..63]), Ok(()));
        assert!(!ins.greeted());
        assert_eq!(ins.feed(&g[63..]), Ok(()));
        assert!(ins.greeted());
    }

    #[test]
    fn default_limits_scale_with_max_message_bytes() {
        let l = Limits::from_max_message_bytes(64 << 20);
        assert_eq!(l.frame, 64 << 20);
        assert_eq!(l.message, MESSAGE_FRAMES * (64 << 20));
        assert_eq!(Limits::from_max_message_bytes(u64::MAX).message, u64::MAX);
    }
}
