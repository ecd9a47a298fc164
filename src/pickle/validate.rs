//! Structural validation of pickle byte strings (opcode walk; no objects are built).
//!
//! [`validate`] walks the opcode stream of protocols 0–5 once, in linear time, and checks that
//! every opcode is known, every argument lies inside the data (and inside its `FRAME`, as
//! `pickle.py` requires), text arguments look like what the unpickler parses, `PROTO` is at most 5,
//! a stack/mark/memo model never underflows (`STOP` on an empty stack, `POP_MARK` without `MARK`,
//! `GET` of an index never `PUT`, ...), and the stream ends with `STOP` exactly at the end of the
//! data, leaving nothing else on the stack. It never panics, whatever the input.

use std::collections::HashSet;

use thiserror::Error;

use super::opcodes::{self, Arg, Effect, Opcode, HIGHEST_PROTOCOL};

/// Why a byte string is not a well-formed pickle. The messages are meant for an HTTP 400 `detail`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PickleError {
    #[error("payload is empty")]
    Empty,
    #[error("payload is not a pickle: unknown opcode 0x{opcode:02x} at offset {offset}")]
    UnknownOpcode { opcode: u8, offset: usize },
    #[error(
        "payload is not a pickle: truncated at offset {offset} ({opcode} needs {needed} bytes, {left} left)"
    )]
    Truncated {
        offset: usize,
        opcode: &'static str,
        needed: u64,
        left: usize,
    },
    #[error("payload is not a pickle: {0}")]
    Malformed(String),
}

type Result<T> = std::result::Result<T, PickleError>;

fn malformed(msg: String) -> PickleError {
    PickleError::Malformed(msg)
}

/// Checks that `data` is a structurally valid pickle (protocols 0–5).
pub fn validate(data: &[u8]) -> Result<()> {
    if data.is_empty() {
        return Err(PickleError::Empty);
    }
    let mut reader = Reader {
        data,
        pos: 0,
        frame_end: None,
    };
    let mut stack = Stack::default();
    let mut memo = Memo::new(data.len());
    loop {
        let offset = reader.pos;
        let Some(&code) = data.get(offset) else {
            return Err(malformed(format!(
                "truncated at offset {offset}: no STOP opcode at the end"
            )));
        };
        let op = opcodes::lookup(code).ok_or(PickleError::UnknownOpcode {
            opcode: code,
            offset,
        })?;
        reader.take(1, op, offset)?;
        let num = read_arg(&mut reader, op, offset)?;
        let at = At { op, offset };
        match op.effect {
            Effect::Push => stack.push(1),
            Effect::Ext => {
                if num == 0 {
                    return Err(malformed(format!("{at} specifies extension code <= 0")));
                }
                stack.push(1);
            }
            Effect::Replace(n) => {
                stack.pop(usize::from(n), at)?;
                stack.push(1);
            }
            Effect::Dup => {
                stack.pop(1, at)?;
                stack.push(2);
            }
            Effect::Pop => stack.pop_or_pop_mark(at)?,
            Effect::Mark => stack.mark(),
            Effect::PopMark => {
                stack.pop_mark(at)?;
            }
            Effect::FromMark => {
                stack.pop_mark(at)?;
                stack.push(1);
            }
            Effect::FromMarkPairs => {
                stack.pop_mark_pairs(at)?;
                stack.push(1);
            }
            Effect::IntoBelowMark => {
                stack.pop_mark(at)?;
                stack.need(1, at)?;
            }
            Effect::IntoBelowMarkPairs => {
                stack.pop_mark_pairs(at)?;
                stack.need(1, at)?;
            }
            Effect::Obj => {
                if stack.pop_mark(at)? == 0 {
                    return Err(malformed(format!("{at} has no class above its MARK")));
                }
                stack.push(1);
            }
            Effect::MemoGet => {
                if !memo.contains(num) {
                    return Err(malformed(format!(
                        "{at} reads memo index {num}, which was never stored"
                    )));
                }
                stack.push(1);
            }
            Effect::MemoPut => {
                stack.need(1, at)?;
                memo.put(num);
            }
            Effect::Memoize => {
                stack.need(1, at)?;
                memo.put(memo.len);
            }
            Effect::Proto => {
                if num > u64::from(HIGHEST_PROTOCOL) {
                    return Err(malformed(format!(
                        "unsupported pickle protocol {num} at offset {offset} (0 to {HIGHEST_PROTOCOL} allowed)"
                    )));
                }
            }
            Effect::Frame => reader.enter_frame(num, at)?,
            Effect::NextBuffer => {
                return Err(malformed(format!(
                    "{at} refers to an out-of-band buffer, which a payload cannot carry"
                )));
            }
            Effect::Stop => {
                stack.pop(1, at)?;
                return stack.finish(reader.pos, data.len(), at);
            }
        }
    }
}

/// An opcode and its offset, displayed as `NAME at offset N` in error messages.
#[derive(Clone, Copy)]
struct At {
    op: &'static Opcode,
    offset: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at offset {}", self.op.name, self.offset)
    }
}

/// A cursor over the data that also enforces frame boundaries.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// End offset of the current frame, if inside one.
    frame_end: Option<usize>,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// Leaves an exhausted frame; fails when a read of `n` bytes would cross the frame's end.
    fn check_frame(&mut self, n: u64, op: &'static Opcode, offset: usize) -> Result<()> {
        if let Some(end) = self.frame_end {
            if self.pos >= end {
                self.frame_end = None;
            } else if n > (end - self.pos) as u64 {
                return Err(malformed(format!(
                    "{} at offset {offset} reads past the end of its frame at offset {end}",
                    op.name
                )));
            }
        }
        Ok(())
    }

    /// Reads `n` bytes, which must lie in the data (and in the current frame, if any).
    fn take(&mut self, n: u64, op: &'static Opcode, offset: usize) -> Result<&'a [u8]> {
        let left = self.left();
        if n > left as u64 {
            return Err(PickleError::Truncated {
                offset: self.pos,
                opcode: op.name,
                needed: n,
                left,
            });
        }
        self.check_frame(n, op, offset)?;
        let start = self.pos;
        self.pos += n as usize;
        Ok(self.data.get(start..self.pos).unwrap_or_default())
    }

    /// Reads a fixed-size little-endian field.
    fn array<const N: usize>(&mut self, op: &'static Opcode, offset: usize) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        for (o, b) in out.iter_mut().zip(self.take(N as u64, op, offset)?) {
            *o = *b;
        }
        Ok(out)
    }

    /// Reads a line up to (excluding) its newline, which must lie in the current frame if any.
    fn line(&mut self, op: &'static Opcode, offset: usize) -> Result<&'a [u8]> {
        self.check_frame(1, op, offset)?;
        let limit = self.frame_end.unwrap_or(self.data.len());
        let rest = self.data.get(self.pos..limit).unwrap_or_default();
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            let place = if self.frame_end.is_some() {
                "before the end of its frame"
            } else {
                "before the end of the data"
            };
            return Err(malformed(format!(
                "truncated at offset {} ({} at offset {offset} needs a newline-terminated argument, none found {place})",
                self.pos, op.name
            )));
        };
        let line = rest.get(..n).unwrap_or_default();
        self.pos += n + 1;
        Ok(line)
    }

    fn enter_frame(&mut self, len: u64, at: At) -> Result<()> {
        if let Some(end) = self.frame_end {
            if self.pos < end {
                return Err(malformed(format!(
                    "{at} begins a new frame before the current one ends at offset {end}"
                )));
            }
        }
        let left = self.left();
        if len > left as u64 {
            return Err(PickleError::Truncated {
                offset: self.pos,
                opcode: at.op.name,
                needed: len,
                left,
            });
        }
        self.frame_end = Some(self.pos + len as usize);
        Ok(())
    }
}

/// Reads `op`'s argument, checks it, and returns its numeric value (0 when it has none).
fn read_arg(r: &mut Reader<'_>, op: &'static Opcode, offset: usize) -> Result<u64> {
    let at = At { op, offset };
    let num = match op.arg {
        Arg::None => 0,
        Arg::Uint1 => u64::from(r.array::<1>(op, offset)?[0]),
        Arg::Uint2 => u64::from(u16::from_le_bytes(r.array(op, offset)?)),
        // Only EXT4 uses the value, and it rejects codes <= 0: map negatives to 0.
        Arg::Int4 => u64::try_from(i32::from_le_bytes(r.array(op, offset)?)).unwrap_or(0),
        Arg::Uint4 => u64::from(u32::from_le_bytes(r.array(op, offset)?)),
        Arg::Uint8 => u64::from_le_bytes(r.array(op, offset)?),
        Arg::Float8 => {
            r.take(8, op, offset)?;
            0
        }
        Arg::DecimalnlShort => {
            let line = r.line(op, offset)?;
            if matches!(op.effect, Effect::MemoGet | Effect::MemoPut) {
                memo_index(line).ok_or_else(|| bad_text(at, "a memo index", line))?
            } else if is_int_literal(line) {
                0
            } else {
                return Err(bad_text(at, "an integer", line));
            }
        }
        Arg::DecimalnlLong => {
            let line = r.line(op, offset)?;
            let digits = line.strip_suffix(b"L").unwrap_or(line);
            let digits = digits
                .strip_prefix(b"-")
                .or_else(|| digits.strip_prefix(b"+"))
                .unwrap_or(digits);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(bad_text(at, "an integer", line));
            }
            0
        }
        Arg::Floatnl => {
            let line = r.line(op, offset)?;
            let ok = |b: &u8| b.is_ascii_alphanumeric() || b"+-._".contains(b);
            if line.trim_ascii().is_empty() || !line.trim_ascii().iter().all(ok) {
                return Err(bad_text(at, "a float", line));
            }
            0
        }
        Arg::Stringnl => {
            let line = r.line(op, offset)?;
            let s = line.trim_ascii_end();
            let quoted = matches!(s, [q @ (b'\'' | b'"'), .., e] if q == e);
            if !quoted {
                return Err(bad_text(at, "a quoted string", line));
            }
            0
        }
        Arg::StringnlNoescape => {
            let line = r.line(op, offset)?;
            if !line.is_ascii() {
                return Err(bad_text(at, "an ASCII persistent id", line));
            }
            0
        }
        Arg::StringnlNoescapePair => {
            for what in ["a module name", "a qualified name"] {
                let line = r.line(op, offset)?;
                if line.is_empty() || std::str::from_utf8(line).is_err() {
                    return Err(bad_text(at, what, line));
                }
            }
            0
        }
        Arg::Unicodestringnl => {
            r.line(op, offset)?;
            0
        }
        Arg::Bytes1 | Arg::String1 | Arg::Long1 => {
            let n = r.array::<1>(op, offset)?[0];
            r.take(u64::from(n), op, offset)?;
            0
        }
        Arg::Bytes4 => {
            let n = u32::from_le_bytes(r.array(op, offset)?);
            r.take(u64::from(n), op, offset)?;
            0
        }
        Arg::String4 | Arg::Long4 => {
            let n = i32::from_le_bytes(r.array(op, offset)?);
            let n = u64::try_from(n)
                .map_err(|_| malformed(format!("{at} has a negative byte count ({n})")))?;
            r.take(n, op, offset)?;
            0
        }
        Arg::Bytes8 | Arg::Bytearray8 => {
            let n = u64::from_le_bytes(r.array(op, offset)?);
            r.take(n, op, offset)?;
            0
        }
        Arg::Unicodestring1 | Arg::Unicodestring4 | Arg::Unicodestring8 => {
            let n = match op.arg {
                Arg::Unicodestring1 => u64::from(r.array::<1>(op, offset)?[0]),
                Arg::Unicodestring4 => u64::from(u32::from_le_bytes(r.array(op, offset)?)),
                _ => u64::from_le_bytes(r.array(op, offset)?),
            };
            let text = r.take(n, op, offset)?;
            if !is_utf8_surrogatepass(text) {
                return Err(malformed(format!(
                    "{at} holds text that is not valid UTF-8"
                )));
            }
            0
        }
    };
    Ok(num)
}

fn bad_text(at: At, what: &str, line: &[u8]) -> PickleError {
    const SHOW: usize = 40;
    let shown = String::from_utf8_lossy(line.get(..SHOW).unwrap_or(line));
    let more = if line.len() > SHOW { "..." } else { "" };
    malformed(format!("{at} expects {what}, got {shown:?}{more}"))
}

/// `int(text, 0)`-like literal: optional sign, a digit, then digits/letters/underscores.
fn is_int_literal(line: &[u8]) -> bool {
    let s = line.trim_ascii();
    let s = s
        .strip_prefix(b"-")
        .or_else(|| s.strip_prefix(b"+"))
        .unwrap_or(s);
    matches!(s, [first, ..] if first.is_ascii_digit())
        && s.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// A non-negative decimal memo index, as `PUT`/`GET` write it.
fn memo_index(line: &[u8]) -> Option<u64> {
    let s = line.trim_ascii();
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// UTF-8 that may encode lone surrogates (CPython decodes pickled text with `surrogatepass`).
fn is_utf8_surrogatepass(mut s: &[u8]) -> bool {
    loop {
        match std::str::from_utf8(s) {
            Ok(_) => return true,
            Err(e) => match s.get(e.valid_up_to()..) {
                Some([0xED, 0xA0..=0xBF, 0x80..=0xBF, rest @ ..]) => s = rest,
                _ => return false,
            },
        }
    }
}

/// Object count and mark positions of the unpickler's stack.
#[derive(Default)]
struct Stack {
    depth: usize,
    /// The depth at which each open mark was pushed, innermost last.
    marks: Vec<usize>,
}

impl Stack {
    fn above_mark(&self) -> usize {
        self.depth - self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, n: usize) {
        self.depth += n;
    }

    fn need(&self, n: usize, at: At) -> Result<()> {
        let have = self.above_mark();
        if have < n {
            let place = if self.marks.is_empty() {
                "on the stack"
            } else {
                "above the last MARK"
            };
            return Err(malformed(format!(
                "stack underflow: {at} needs {n} object(s), {have} {place}"
            )));
        }
        Ok(())
    }

    fn pop(&mut self, n: usize, at: At) -> Result<()> {
        self.need(n, at)?;
        self.depth -= n;
        Ok(())
    }

    fn mark(&mut self) {
        self.marks.push(self.depth);
    }

    /// Pops the topmost mark and the objects above it; returns how many objects that was.
    fn pop_mark(&mut self, at: At) -> Result<usize> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| malformed(format!("{at} has no MARK to pop")))?;
        let n = self.depth - mark;
        self.depth = mark;
        Ok(n)
    }

    fn pop_mark_pairs(&mut self, at: At) -> Result<()> {
        let n = self.pop_mark(at)?;
        if n % 2 != 0 {
            return Err(malformed(format!(
                "{at} has an odd number of objects ({n}) for key/value pairs"
            )));
        }
        Ok(())
    }

    /// `POP`: the top object, or the topmost mark when nothing lies above it (protocol 0 writes
    /// `POP`s for a recursive tuple's items and its mark).
    fn pop_or_pop_mark(&mut self, at: At) -> Result<()> {
        if self.above_mark() == 0 && !self.marks.is_empty() {
            self.pop_mark(at).map(drop)
        } else {
            self.pop(1, at)
        }
    }

    /// After `STOP` popped the result: nothing may be left, on the stack or in the data.
    fn finish(&self, pos: usize, len: usize, at: At) -> Result<()> {
        if !self.marks.is_empty() {
            return Err(malformed(format!(
                "{at} leaves {} MARK(s) open",
                self.marks.len()
            )));
        }
        if self.depth != 0 {
            return Err(malformed(format!(
                "{at} leaves {} object(s) on the stack besides the result",
                self.depth
            )));
        }
        if pos != len {
            return Err(malformed(format!(
                "{} byte(s) of trailing data after {at}",
                len - pos
            )));
        }
        Ok(())
    }
}

/// The memo indices stored so far: a bitmap for indices below the data length (all a real
/// pickler uses), a set for the rest.
struct Memo {
    dense: Vec<bool>,
    limit: u64,
    sparse: HashSet<u64>,
    /// Number of distinct indices stored, which is where `MEMOIZE` stores next.
    len: u64,
}

impl Memo {
    fn new(data_len: usize) -> Self {
        Memo {
            dense: Vec::new(),
            limit: data_len as u64,
            sparse: HashSet::new(),
            len: 0,
        }
    }

    fn put(&mut self, idx: u64) {
        let new = if idx < self.limit {
            let i = idx as usize;
            if self.dense.len() <= i {
                self.dense.resize(i + 1, false);
            }
            self.dense
                .get_mut(i)
                .is_some_and(|slot| !std::mem::replace(slot, true))
        } else {
            self.sparse.insert(idx)
        };
        self.len += u64::from(new);
    }

    fn contains(&self, idx: u64) -> bool {
        if idx < self.limit {
            usize::try_from(idx)
                .ok()
                .and_then(|i| self.dense.get(i))
                .is_some_and(|&b| b)
        } else {
            self.sparse.contains(&idx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn err(data: &[u8]) -> String {
        validate(data).unwrap_err().to_string()
    }

    /// `pickle.dumps([1, -2, 3.5, 'hé', b'b', (None, True), {'k': 2**70}], protocol=p)`.
    const LIST_P0: &str = "286c70300a49310a61492d320a6146332e350a615668e90a70310a61635f636f646563730a656e636f64650a70320a2856620a70330a566c6174696e310a70340a7470350a5270360a61284e4930310a7470370a61286470380a566b0a70390a4c313138303539313632303731373431313330333432344c0a73612e";
    const LIST_P2: &str = "80025d7100284b014afeffffff47400c000000000000580300000068c3a97101635f636f646563730a656e636f64650a7102580100000062710358060000006c6174696e3171048671055271064e888671077d710858010000006b71098a0900000000000000004073652e";
    const LIST_P4: &str = "80049535000000000000005d94284b014afeffffff47400c0000000000008c0368c3a994430162944e8886947d948c016b948a0900000000000000004073652e";
    /// `r = []; r.append(r); pickle.dumps(r, 0)`.
    const RECURSIVE_P0: &str = "286c70300a67300a612e";
    /// `pickle.dumps(bytearray(b'xy'), 5)` and `pickle.dumps('\ud800', 4)`.
    const BYTEARRAY_P5: &str = "8005950d000000000000009602000000000000007879942e";
    const SURROGATE_P4: &str = "80049507000000000000008c03eda080942e";

    #[test]
    fn accepts_real_pickles() {
        for h in [
            LIST_P0,
            LIST_P2,
            LIST_P4,
            RECURSIVE_P0,
            BYTEARRAY_P5,
            SURROGATE_P4,
        ] {
            assert_eq!(validate(&unhex(h)), Ok(()), "{h}");
        }
        // Recursive tuple `l = []; t = (l,); l.append(t)`: protocol 0 POPs its items and MARK.
        assert_eq!(validate(b"((lp0\n(g0\ntp1\na00g1\n."), Ok(()));
        assert_eq!(validate(b"(]q\x00(h\x00tq\x01a1h\x01."), Ok(()));
        let exc = super::super::platform_exception(super::super::PlatformError::TaskTimeout, "1 s");
        assert_eq!(validate(&exc), Ok(()));
    }

    #[test]
    fn clear_messages() {
        assert_eq!(validate(b""), Err(PickleError::Empty));
        assert_eq!(
            err(b"\x80\x04\xff."),
            "payload is not a pickle: unknown opcode 0xff at offset 2"
        );
        let mut p = b"\x80\x04X\x2c\x01\x00\x00".to_vec();
        p.extend_from_slice(&[b'a'; 12]);
        assert_eq!(
            err(&p),
            "payload is not a pickle: truncated at offset 7 (BINUNICODE needs 300 bytes, 12 left)"
        );
        assert_eq!(
            err(b"."),
            "payload is not a pickle: stack underflow: STOP at offset 0 needs 1 object(s), 0 on the stack"
        );
        assert_eq!(
            err(b"N1."),
            "payload is not a pickle: POP_MARK at offset 1 has no MARK to pop"
        );
        assert_eq!(
            err(b"N.x"),
            "payload is not a pickle: 1 byte(s) of trailing data after STOP at offset 1"
        );
        assert_eq!(
            err(b"\x80\x06N."),
            "payload is not a pickle: unsupported pickle protocol 6 at offset 0 (0 to 5 allowed)"
        );
        assert!(err(b"\x80\x04N").contains("no STOP opcode"));
        assert!(err(b"payload").contains("PUT at offset 0 needs a newline"));
    }

    #[test]
    fn stack_and_memo_model() {
        assert!(err(b"NN.").contains("leaves 1 object(s)"));
        assert!(err(b"(N.").contains("leaves 1 MARK(s) open"));
        assert!(err(b"(N(t.").contains("leaves 1 MARK(s)"));
        assert!(err(b"N\x85\x86.").contains("TUPLE2 at offset 2 needs 2"));
        assert!(err(b"(NNNd.").contains("odd number of objects (3)"));
        assert!(err(b"(o.").contains("no class above its MARK"));
        assert!(err(b"h\x00.").contains("memo index 0, which was never stored"));
        assert!(err(b"N(2.").contains("DUP at offset 2 needs 1 object(s), 0 above the last MARK"));
        assert_eq!(validate(b"N\x94h\x00\x86."), Ok(()));
        assert_eq!(
            validate(b"Nr\xff\xff\xff\x7fj\xff\xff\xff\x7f\x86."),
            Ok(())
        );
        assert!(err(b"\x97.").contains("out-of-band buffer"));
        assert!(err(b"\x82\x00.").contains("extension code <= 0"));
    }

    #[test]
    fn text_arguments() {
        assert_eq!(validate(b"I01\n."), Ok(()));
        assert_eq!(validate(b"L-12L\n."), Ok(()));
        assert_eq!(validate(b"F-inf\n."), Ok(()));
        assert_eq!(validate(b"S'a b'\n."), Ok(()));
        assert_eq!(validate(b"cos\nsystem\n."), Ok(()));
        assert!(err(b"Ix\n.").contains("INT at offset 0 expects an integer, got \"x\""));
        assert!(err(b"S'abc\n.").contains("quoted string"));
        assert!(err(b"c\nsystem\n.").contains("module name"));
        assert!(err(b"X\x01\x00\x00\x00\xff.").contains("not valid UTF-8"));
        assert!(err(b"T\xff\xff\xff\xff.").contains("negative byte count (-1)"));
    }

    #[test]
    fn frames() {
        // FRAME longer than the data.
        assert!(err(b"\x80\x04\x95\x09\x00\x00\x00\x00\x00\x00\x00N.")
            .contains("truncated at offset 11 (FRAME needs 9 bytes, 2 left)"));
        // BINUNICODE's text crosses the frame's end.
        assert!(err(b"\x95\x03\x00\x00\x00\x00\x00\x00\x00\x8c\x02abc.")
            .contains("SHORT_BINUNICODE at offset 9 reads past the end of its frame at offset 12"));
        // A new frame starts inside the current one.
        assert!(
            err(b"\x95\x0a\x00\x00\x00\x00\x00\x00\x00\x95\x01\x00\x00\x00\x00\x00\x00\x00N.")
                .contains("begins a new frame before the current one ends")
        );
        // Data may continue unframed after a frame, and a huge length never overflows.
        assert_eq!(validate(b"\x95\x01\x00\x00\x00\x00\x00\x00\x00N."), Ok(()));
        assert!(err(b"\x95\xff\xff\xff\xff\xff\xff\xff\xffN.")
            .contains("FRAME needs 18446744073709551615 bytes"));
        assert!(err(b"\x8e\xff\xff\xff\xff\xff\xff\xff\xffN.").contains("BINBYTES8 needs"));
    }
}
