//! The pickle opcode table (protocols 0–5, as in CPython's `pickletools.opcodes`).
//!
//! Each opcode has a name (for error messages), the kind of argument that follows it in the byte
//! stream, and its effect on the unpickler's stack, which the validator checks with a small model.

/// How the argument following an opcode is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// No argument.
    None,
    /// One unsigned byte.
    Uint1,
    /// Two-byte little-endian unsigned integer.
    Uint2,
    /// Four-byte little-endian signed integer.
    Int4,
    /// Four-byte little-endian unsigned integer.
    Uint4,
    /// Eight-byte little-endian unsigned integer.
    Uint8,
    /// Eight-byte big-endian IEEE double.
    Float8,
    /// Decimal integer (or `00`/`01` for bools) terminated by a newline; also memo indices.
    DecimalnlShort,
    /// Decimal integer with an optional trailing `L`, terminated by a newline.
    DecimalnlLong,
    /// Float `repr` terminated by a newline.
    Floatnl,
    /// Quoted, escaped string `repr` terminated by a newline.
    Stringnl,
    /// One unescaped ASCII line (persistent id).
    StringnlNoescape,
    /// Two unescaped UTF-8 lines: module and qualified name.
    StringnlNoescapePair,
    /// One raw-unicode-escape line.
    Unicodestringnl,
    /// Byte string with a one-byte length.
    Bytes1,
    /// Byte string with a four-byte unsigned length.
    Bytes4,
    /// Byte string with an eight-byte length.
    Bytes8,
    /// Byte array with an eight-byte length.
    Bytearray8,
    /// Python 2 `str` with a one-byte length.
    String1,
    /// Python 2 `str` with a four-byte *signed* length.
    String4,
    /// UTF-8 text with a one-byte length.
    Unicodestring1,
    /// UTF-8 text with a four-byte length.
    Unicodestring4,
    /// UTF-8 text with an eight-byte length.
    Unicodestring8,
    /// Two's complement integer with a one-byte length.
    Long1,
    /// Two's complement integer with a four-byte *signed* length.
    Long4,
}

/// What an opcode does to the unpickler's stack (and memo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Pushes one object.
    Push,
    /// Pops `n` objects and pushes one (`TUPLE2`, `REDUCE`, `SETITEM`, ...).
    Replace(u8),
    /// Duplicates the top object.
    Dup,
    /// Pops the top object, or the topmost mark when nothing lies above it.
    Pop,
    /// Pushes a mark.
    Mark,
    /// Discards the topmost mark and everything above it.
    PopMark,
    /// Collects the objects above the topmost mark into one object.
    FromMark,
    /// Like `FromMark`, but the objects are key/value pairs.
    FromMarkPairs,
    /// Collects the objects above the topmost mark into the object below the mark.
    IntoBelowMark,
    /// Like `IntoBelowMark`, but the objects are key/value pairs.
    IntoBelowMarkPairs,
    /// `OBJ`: the objects above the topmost mark are a class and its arguments.
    Obj,
    /// Pushes an object from the extension registry; the code must be positive.
    Ext,
    /// Pushes a memo entry (`GET` family).
    MemoGet,
    /// Stores the top object in the memo at the argument's index (`PUT` family).
    MemoPut,
    /// Stores the top object in the memo at the next free index.
    Memoize,
    /// Declares the protocol version.
    Proto,
    /// Starts a frame of the given length (protocol 4+).
    Frame,
    /// Pushes an out-of-band buffer, which a self-contained payload cannot provide.
    NextBuffer,
    /// Ends the pickle; the top object is the result.
    Stop,
}

/// One opcode of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opcode {
    /// The opcode byte.
    pub code: u8,
    /// The name used by `pickletools`.
    pub name: &'static str,
    /// The argument that follows the opcode byte.
    pub arg: Arg,
    /// The opcode's stack effect.
    pub effect: Effect,
}

const fn op(code: u8, name: &'static str, arg: Arg, effect: Effect) -> Opcode {
    Opcode {
        code,
        name,
        arg,
        effect,
    }
}

/// All 68 opcodes of pickle protocols 0–5.
pub const OPCODES: [Opcode; 68] = [
    op(b'I', "INT", Arg::DecimalnlShort, Effect::Push),
    op(b'J', "BININT", Arg::Int4, Effect::Push),
    op(b'K', "BININT1", Arg::Uint1, Effect::Push),
    op(b'M', "BININT2", Arg::Uint2, Effect::Push),
    op(b'L', "LONG", Arg::DecimalnlLong, Effect::Push),
    op(0x8a, "LONG1", Arg::Long1, Effect::Push),
    op(0x8b, "LONG4", Arg::Long4, Effect::Push),
    op(b'S', "STRING", Arg::Stringnl, Effect::Push),
    op(b'T', "BINSTRING", Arg::String4, Effect::Push),
    op(b'U', "SHORT_BINSTRING", Arg::String1, Effect::Push),
    op(b'B', "BINBYTES", Arg::Bytes4, Effect::Push),
    op(b'C', "SHORT_BINBYTES", Arg::Bytes1, Effect::Push),
    op(0x8e, "BINBYTES8", Arg::Bytes8, Effect::Push),
    op(0x96, "BYTEARRAY8", Arg::Bytearray8, Effect::Push),
    op(0x97, "NEXT_BUFFER", Arg::None, Effect::NextBuffer),
    op(0x98, "READONLY_BUFFER", Arg::None, Effect::Replace(1)),
    op(b'N', "NONE", Arg::None, Effect::Push),
    op(0x88, "NEWTRUE", Arg::None, Effect::Push),
    op(0x89, "NEWFALSE", Arg::None, Effect::Push),
    op(b'V', "UNICODE", Arg::Unicodestringnl, Effect::Push),
    op(0x8c, "SHORT_BINUNICODE", Arg::Unicodestring1, Effect::Push),
    op(b'X', "BINUNICODE", Arg::Unicodestring4, Effect::Push),
    op(0x8d, "BINUNICODE8", Arg::Unicodestring8, Effect::Push),
    op(b'F', "FLOAT", Arg::Floatnl, Effect::Push),
    op(b'G', "BINFLOAT", Arg::Float8, Effect::Push),
    op(b']', "EMPTY_LIST", Arg::None, Effect::Push),
    op(b'a', "APPEND", Arg::None, Effect::Replace(2)),
    op(b'e', "APPENDS", Arg::None, Effect::IntoBelowMark),
    op(b'l', "LIST", Arg::None, Effect::FromMark),
    op(b')', "EMPTY_TUPLE", Arg::None, Effect::Push),
    op(b't', "TUPLE", Arg::None, Effect::FromMark),
    op(0x85, "TUPLE1", Arg::None, Effect::Replace(1)),
    op(0x86, "TUPLE2", Arg::None, Effect::Replace(2)),
    op(0x87, "TUPLE3", Arg::None, Effect::Replace(3)),
    op(b'}', "EMPTY_DICT", Arg::None, Effect::Push),
    op(b'd', "DICT", Arg::None, Effect::FromMarkPairs),
    op(b's', "SETITEM", Arg::None, Effect::Replace(3)),
    op(b'u', "SETITEMS", Arg::None, Effect::IntoBelowMarkPairs),
    op(0x8f, "EMPTY_SET", Arg::None, Effect::Push),
    op(0x90, "ADDITEMS", Arg::None, Effect::IntoBelowMark),
    op(0x91, "FROZENSET", Arg::None, Effect::FromMark),
    op(b'0', "POP", Arg::None, Effect::Pop),
    op(b'2', "DUP", Arg::None, Effect::Dup),
    op(b'(', "MARK", Arg::None, Effect::Mark),
    op(b'1', "POP_MARK", Arg::None, Effect::PopMark),
    op(b'g', "GET", Arg::DecimalnlShort, Effect::MemoGet),
    op(b'h', "BINGET", Arg::Uint1, Effect::MemoGet),
    op(b'j', "LONG_BINGET", Arg::Uint4, Effect::MemoGet),
    op(b'p', "PUT", Arg::DecimalnlShort, Effect::MemoPut),
    op(b'q', "BINPUT", Arg::Uint1, Effect::MemoPut),
    op(b'r', "LONG_BINPUT", Arg::Uint4, Effect::MemoPut),
    op(0x94, "MEMOIZE", Arg::None, Effect::Memoize),
    op(0x82, "EXT1", Arg::Uint1, Effect::Ext),
    op(0x83, "EXT2", Arg::Uint2, Effect::Ext),
    op(0x84, "EXT4", Arg::Int4, Effect::Ext),
    op(b'c', "GLOBAL", Arg::StringnlNoescapePair, Effect::Push),
    op(0x93, "STACK_GLOBAL", Arg::None, Effect::Replace(2)),
    op(b'R', "REDUCE", Arg::None, Effect::Replace(2)),
    op(b'b', "BUILD", Arg::None, Effect::Replace(2)),
    op(b'i', "INST", Arg::StringnlNoescapePair, Effect::FromMark),
    op(b'o', "OBJ", Arg::None, Effect::Obj),
    op(0x81, "NEWOBJ", Arg::None, Effect::Replace(2)),
    op(0x92, "NEWOBJ_EX", Arg::None, Effect::Replace(3)),
    op(0x80, "PROTO", Arg::Uint1, Effect::Proto),
    op(b'.', "STOP", Arg::None, Effect::Stop),
    op(0x95, "FRAME", Arg::Uint8, Effect::Frame),
    op(b'P', "PERSID", Arg::StringnlNoescape, Effect::Push),
    op(b'Q', "BINPERSID", Arg::None, Effect::Replace(1)),
];

/// The highest protocol version `PROTO` may declare.
pub const HIGHEST_PROTOCOL: u8 = 5;

const fn build_table() -> [Option<Opcode>; 256] {
    let mut table = [None; 256];
    let mut i = 0;
    while i < OPCODES.len() {
        table[OPCODES[i].code as usize] = Some(OPCODES[i]);
        i += 1;
    }
    table
}

static TABLE: [Option<Opcode>; 256] = build_table();

/// Looks up an opcode byte; unknown bytes yield `None`.
pub fn lookup(code: u8) -> Option<&'static Opcode> {
    TABLE[usize::from(code)].as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_68_distinct_opcodes() {
        let known = (0..=255u8).filter(|&b| lookup(b).is_some()).count();
        assert_eq!(known, OPCODES.len());
        for o in OPCODES {
            assert_eq!(lookup(o.code).map(|x| x.name), Some(o.name));
        }
    }
}
