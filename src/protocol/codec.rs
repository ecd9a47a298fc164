//! Encoding protocol messages as ZeroMQ multipart messages, and decoding them strictly.

use bytes::Bytes;
use thiserror::Error;
use zeromq::ZmqMessage;

use super::Header;

/// A message that is not valid protocol.
#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("empty message")]
    Empty,
    #[error("bad header: {0}")]
    Header(String),
    #[error("{kind} message needs {expected} blob frame(s), got {got}")]
    Blobs {
        kind: &'static str,
        expected: usize,
        got: usize,
    },
}

/// A decoded message: the header and its blob frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub header: Header,
    pub blobs: Vec<Bytes>,
}

/// Builds `[header JSON, blobs...]`, after `envelope` frames (ROUTER identity, REQ delimiter).
pub fn encode(envelope: &[Bytes], header: &Header, blobs: Vec<Bytes>) -> ZmqMessage {
    debug_assert_eq!(header.blob_count(), blobs.len());
    let json = serde_json::to_vec(header).unwrap_or_else(|e| {
        // Headers are plain data; serialization cannot fail. Keep the process alive regardless.
        tracing::error!(error = %e, "cannot serialize protocol header");
        b"{\"type\":\"unknown\"}".to_vec()
    });
    let mut frames = Vec::with_capacity(envelope.len() + 1 + blobs.len());
    frames.extend_from_slice(envelope);
    frames.push(Bytes::from(json));
    frames.extend(blobs);
    let mut msg = ZmqMessage::from(frames.remove(0));
    for f in frames {
        msg.push_back(f);
    }
    msg
}

/// Parses `frames` (envelope already removed).
pub fn decode(mut frames: Vec<Bytes>) -> Result<Decoded, ProtocolError> {
    if frames.is_empty() {
        return Err(ProtocolError::Empty);
    }
    let head = frames.remove(0);
    let header: Header =
        serde_json::from_slice(&head).map_err(|e| ProtocolError::Header(e.to_string()))?;
    let expected = header.blob_count();
    if frames.len() != expected {
        return Err(ProtocolError::Blobs {
            kind: header.kind(),
            expected,
            got: frames.len(),
        });
    }
    Ok(Decoded {
        header,
        blobs: frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ResultMeta, TaskMeta, TaskRef};
    use uuid::Uuid;

    fn task() -> TaskRef {
        TaskRef {
            task_id: Uuid::new_v4(),
            attempt: 2,
        }
    }

    #[test]
    fn tasks_roundtrip_with_envelope() {
        let t = task();
        let h = Header::Tasks {
            tasks: vec![TaskMeta {
                task: t,
                function_id: Uuid::new_v4(),
                timeout_ms: Some(1500),
            }],
            acks: vec![task()],
        };
        let msg = encode(
            &[Bytes::from_static(b"peer"), Bytes::new()],
            &h,
            vec![Bytes::from_static(b"fn"), Bytes::from_static(b"args")],
        );
        let mut frames = msg.into_vec();
        assert_eq!(frames.len(), 5);
        let body = frames.split_off(2);
        let d = decode(body).expect("decode");
        assert_eq!(d.header, h);
        assert_eq!(
            d.blobs,
            vec![Bytes::from_static(b"fn"), Bytes::from_static(b"args")]
        );
    }

    #[test]
    fn blob_count_is_enforced() {
        let h = Header::Report {
            worker_id: "w".into(),
            results: vec![ResultMeta {
                task: task(),
                ok: true,
                cause: String::new(),
            }],
        };
        let frames = encode(&[], &h, vec![Bytes::from_static(b"r")]).into_vec();
        assert!(decode(frames.clone()).is_ok());
        let mut short = frames;
        short.pop();
        assert!(matches!(
            decode(short),
            Err(ProtocolError::Blobs {
                expected: 1,
                got: 0,
                ..
            })
        ));
        assert!(matches!(decode(vec![]), Err(ProtocolError::Empty)));
        assert!(matches!(
            decode(vec![Bytes::from_static(b"{\"type\":\"nope\"}")]),
            Err(ProtocolError::Header(_))
        ));
    }

    #[test]
    fn header_json_is_tagged() {
        let json = serde_json::to_string(&Header::Ping).expect("json");
        assert_eq!(json, r#"{"type":"ping"}"#);
        let r = ResultMeta {
            task: task(),
            ok: true,
            cause: String::new(),
        };
        let v = serde_json::to_value(&r).expect("json");
        assert!(v.get("cause").is_none() && v.get("task_id").is_some());
    }
}
