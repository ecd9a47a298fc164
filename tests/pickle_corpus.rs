//! Validates a corpus of real pickles (dill and `pickle`, protocols 0–5) made by a Python
//! interpreter, and checks that corrupted variants are rejected and that no input makes
//! `validate` panic.
//!
//! The interpreter is `$FAAS_TEST_PYTHON`, else `<crate>/.venv/bin/python`, else `python3`;
//! it must have `dill` installed.

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use faas::payload::decode_pickle;
use faas::pickle::{platform_exception, validate, PickleError, PlatformError};

/// Prints `name<TAB>base64` for every pickle of the corpus.
const CORPUS_PY: &str = r#"
import base64, collections, datetime, decimal, fractions, math, os.path, pickle, sys
import dill

out = []
def emit(name, data):
    out.append(name + "\t" + base64.b64encode(data).decode())

def try_emit(name, make):
    try:
        emit(name, make())
    except Exception as e:  # a Python-side limitation, not the validator's business
        print("skipped %s: %r" % (name, e), file=sys.stderr)

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def norm(self):
        return math.hypot(self.x, self.y)

class Slotted:
    __slots__ = ("a", "b")
    def __init__(self):
        self.a, self.b = 1, "two"

def make_adder(n):
    def add(x):
        return x + n
    return add

def outer():
    def inner(a, *args, k=3, **kw):
        return [a, args, k, kw]
    return inner

def uses_global(x):
    return math.sqrt(x) + len(os.path.join("a", "b"))

rec_list = [1, 2]
rec_list.append(rec_list)
rec_dict = {"k": None}
rec_dict["self"] = rec_dict
l = []
rec_tuple = (l, 1)
l.append(rec_tuple)
shared = [1, 2, 3]

scalars = [0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, -2**31, 2**31, 2**63, -2**70,
           2**1000, -(2**5000), 0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"),
           1e300, 3j, "", "ascii", "ünïcödé ☃ 😀", "\ud800 lone surrogate", "x" * 300,
           b"", b"\x00\xff" * 10, b"b" * 300, bytearray(b"ba"), bytearray(300), None, True, False]
containers = [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, "a"], {}, {"a": 1, 2: [3]},
              set(), {1, 2, 3}, frozenset(), frozenset({"f"}), [shared, shared], rec_list,
              rec_dict, rec_tuple, collections.OrderedDict(a=1), collections.deque([1, 2]),
              collections.Counter("hello"), datetime.datetime(2024, 5, 6, 7, 8, 9),
              datetime.date(2020, 1, 1), decimal.Decimal("1.10"), fractions.Fraction(1, 3),
              range(1, 10, 2), slice(1, 2), Point(3, 4), Slotted(), list(range(5000)),
              {str(i): i for i in range(2000)}, b"L" * 70000, "U" * 70000,
              [b"M" * 70000, b"N" * 70000]]
args_kwargs = ((1, 2.5, 2**100, "s", "ü😀", b"b", bytearray(b"ba"), {1, 2}, frozenset({3}),
                {"a": [1, {"b": None}]}, None, True, rec_list),
               {"k": -7, "big": -2**200, "text": "t" * 1000, "blob": b"\x00" * 1000,
                "nested": {"set": {1.5}, "tuple": (rec_dict,)}})

for proto in range(6):
    for i, obj in enumerate(scalars + containers):
        try_emit("pickle p%d obj%d" % (proto, i), lambda: pickle.dumps(obj, protocol=proto))
        try_emit("pickle(py) p%d obj%d" % (proto, i), lambda: pickle._dumps(obj, protocol=proto))
    try_emit("pickle p%d args" % proto, lambda: pickle.dumps(args_kwargs, protocol=proto))
    if proto == 5:
        try_emit("pickle p5 PickleBuffer(bytearray)",
                 lambda: pickle.dumps(pickle.PickleBuffer(bytearray(b"pb")), protocol=5))
        try_emit("pickle p5 PickleBuffer(bytes)",
                 lambda: pickle.dumps(pickle.PickleBuffer(b"pb"), protocol=5))

functions = {
    "lambda": lambda a, b=2: a * b,
    "closure": make_adder(5),
    "nested": outer(),
    "global-user": uses_global,
    "class": Point,
    "slotted-class": Slotted,
    "instance": Point(1, 2),
    "bound-method": Point(1, 2).norm,
    "by-reference": os.path.join,
    "builtin": len,
    "generator-expr-fn": lambda n: sum(i * i for i in range(n)),
}
for name, obj in functions.items():
    try_emit("dill " + name, lambda: dill.dumps(obj))
    try_emit("dill recurse " + name, lambda: dill.dumps(obj, recurse=True))
    try_emit("dill byref " + name, lambda: dill.dumps(obj, byref=True))
    for proto in range(6):
        try_emit("dill p%d %s" % (proto, name), lambda: dill.dumps(obj, protocol=proto))
try_emit("dill args", lambda: dill.dumps(args_kwargs))

# Rarer opcodes, all checked to load with CPython first.
class KwOnly:
    def __new__(cls, *, k):
        self = object.__new__(cls)
        self.k = k
        return self
    def __getnewargs_ex__(self):
        return (), {"k": self.k}

many = ["s%d" % i for i in range(300)]
handmade = {
    "NEWOBJ_EX": pickle.dumps(KwOnly(k=1), protocol=4),
    "LONG_BINGET": pickle.dumps(many + many, protocol=2),
    "STRING": b"S'abc'\np0\n.",
    "SHORT_BINSTRING/BINSTRING": b"(U\x03abcq\x00T\x02\x00\x00\x00dej\x00\x00\x00\x00l.",
    "INST": b"(I3\nI4\ni__main__\nPoint\np0\n.",
    "OBJ": b"(c__main__\nPoint\nK\x01K\x02o.",
    "DUP": b"N2\x86.",
    "LONG4": b"\x8b\x02\x00\x00\x00\xff\x7f.",
}
for name, data in handmade.items():
    pickle.loads(data, encoding="bytes")
    emit("handmade " + name, data)
import copyreg
for code in (240, 1000, 100000):
    copyreg.add_extension("__main__", "Point", code)
    emit("ext %d" % code, pickle.dumps(Point, protocol=2))
    copyreg.remove_extension("__main__", "Point", code)
class Persistent(pickle.Pickler):
    def persistent_id(self, obj):
        return "pid" if obj == "persist me" else None
for proto in (0, 2):
    f = __import__("io").BytesIO()
    Persistent(f, protocol=proto).dump(["persist me", 1])
    emit("persid p%d" % proto, f.getvalue())
# Out-of-band buffers cannot travel in a payload: these must be rejected.
emit("reject NEXT_BUFFER", pickle.dumps(pickle.PickleBuffer(b"oob"), protocol=5,
                                        buffer_callback=lambda b: False))
emit("reject NEXT_BUFFER+READONLY_BUFFER",
     pickle.dumps([pickle.PickleBuffer(b"ro"), pickle.PickleBuffer(bytearray(b"rw"))],
                  protocol=5, buffer_callback=lambda b: False))
try_emit("dill (fn, args)", lambda: dill.dumps((make_adder(1), args_kwargs)))

print("\n".join(out))
"#;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FAAS_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let py = python();
    let out = Command::new(&py)
        .args(["-c", CORPUS_PY])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (set FAAS_TEST_PYTHON): {e}", py.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed (it needs dill; set FAAS_TEST_PYTHON): {stderr}",
        py.display()
    );
    if !stderr.is_empty() {
        eprintln!("{stderr}");
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    String::from_utf8(out.stdout)
        .expect("corpus output is ASCII")
        .lines()
        .map(|line| {
            let (name, data) = line.split_once('\t').expect("name<TAB>base64");
            (
                name.to_string(),
                b64.decode(data).expect("base64 from Python"),
            )
        })
        .collect()
}

/// splitmix64: a tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Feeds every truncation, single-bit flip, byte substitution and some splices of `data`
/// to `validate` (which must not panic); returns how many variants were accepted.
fn mutate(data: &[u8], rng: &mut Rng) -> usize {
    for cut in 0..data.len() {
        let prefix = data.get(..cut).unwrap_or_default();
        assert!(validate(prefix).is_err(), "truncation to {cut} accepted");
    }
    let mut accepted = 0;
    let mut buf = data.to_vec();
    for i in 0..data.len() {
        for bit in 0..8 {
            buf[i] ^= 1 << bit;
            accepted += usize::from(validate(&buf).is_ok());
            buf[i] ^= 1 << bit;
        }
        buf[i] = rng.next() as u8;
        accepted += usize::from(validate(&buf).is_ok());
        buf[i] = data[i];
    }
    for _ in 0..50 {
        let a = (rng.next() as usize) % (data.len() + 1);
        let b = (rng.next() as usize) % (data.len() + 1);
        let mut spliced = data.get(..a.min(b)).unwrap_or_default().to_vec();
        spliced.extend_from_slice(&rng.bytes(a.abs_diff(b) % 17));
        spliced.extend_from_slice(data.get(a.max(b)..).unwrap_or_default());
        accepted += usize::from(validate(&spliced).is_ok());
    }
    accepted
}

#[test]
fn python_corpus_validates_and_corruptions_are_rejected() {
    let corpus = corpus();
    assert!(corpus.len() > 900, "only {} pickles produced", corpus.len());
    for (name, data) in &corpus {
        if name.starts_with("reject ") {
            let err = validate(data).expect_err(name).to_string();
            assert!(err.contains("out-of-band buffer"), "{name}: {err}");
            continue;
        }
        assert_eq!(validate(data), Ok(()), "{name} rejected");
        let mut trailing = data.clone();
        trailing.push(b'.');
        assert!(validate(&trailing).is_err(), "{name} + '.' accepted");
        trailing.truncate(data.len());
        trailing.extend_from_slice(data);
        assert!(validate(&trailing).is_err(), "{name} twice accepted");
    }
    let mut rng = Rng(0x5eed);
    let (mut variants, mut accepted) = (0usize, 0usize);
    for (name, data) in corpus.iter().filter(|(_, d)| d.len() <= 4096) {
        if name.starts_with("dill") || rng.next() % 8 == 0 {
            variants += data.len() * 10 + 50;
            accepted += mutate(data, &mut rng);
        }
    }
    eprintln!(
        "{} pickles; {variants} corrupted variants, {accepted} still structurally valid",
        corpus.len()
    );
    // Flips inside string/bytes/number payloads (e.g. dill's code bytes) stay well-formed.
    assert!(accepted < variants, "no corruption rejected");
}

#[test]
fn random_bytes_never_panic_and_are_rejected() {
    let mut rng = Rng(42);
    let mut accepted = 0;
    for i in 0..20_000 {
        let len = (rng.next() % 64) as usize + (i % 3) * 200;
        let mut data = rng.bytes(len);
        if i % 2 == 0 && !data.is_empty() {
            // Look a little more like a pickle, to get past the first opcodes more often.
            data[0] = 0x80;
            if let Some(last) = data.last_mut() {
                *last = b'.';
            }
        }
        accepted += usize::from(validate(&data).is_ok());
    }
    assert!(accepted < 20, "{accepted} random byte strings accepted");
}

#[test]
fn builtin_samples_survive_mutation() {
    let mut rng = Rng(7);
    let samples = [
        platform_exception(PlatformError::WorkerFailure, "worker w1 was lost"),
        b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01\x8c\x01a\x94e.".to_vec(),
        b"((lp0\n(g0\ntp1\na00g1\n.".to_vec(),
        b"(dp0\nVk\np1\nL123L\nsS'x'\nF1.5\ns.".to_vec(),
    ];
    for s in &samples {
        assert_eq!(validate(s), Ok(()));
        mutate(s, &mut rng);
    }
}

#[test]
fn text_payload_is_rejected() {
    assert!(matches!(
        validate(b"payload"),
        Err(PickleError::Malformed(_))
    ));
    let err = decode_pickle("payload").unwrap_err().to_string();
    assert!(err.contains("not valid base64"), "{err}");
    let err = decode_pickle("cGF5bG9hZA==").unwrap_err().to_string();
    assert!(err.starts_with("payload is not a pickle"), "{err}");
}
