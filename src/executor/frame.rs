//! Length-prefixed framing: each frame is a 4-byte big-endian length followed by that many bytes.

use std::io;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame either side accepts (1 GiB).
pub const MAX_FRAME: usize = 1 << 30;

/// Frames up to this total size are coalesced into a single write.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Reading a frame failed.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge(usize),
    #[error("stream ended inside a frame")]
    Truncated,
}

/// The 4-byte length prefix of a body of `len` bytes.
pub fn header(len: usize) -> io::Result<[u8; 4]> {
    u32::try_from(len)
        .ok()
        .filter(|_| len <= MAX_FRAME)
        .map(u32::to_be_bytes)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame of {len} bytes is too large"),
            )
        })
}

/// Encodes `bodies` as consecutive frames into one buffer.
pub fn encode(bodies: &[&[u8]]) -> io::Result<Vec<u8>> {
    let total = bodies.iter().map(|b| b.len() + 4).sum();
    let mut out = Vec::with_capacity(total);
    for body in bodies {
        out.extend_from_slice(&header(body.len())?);
        out.extend_from_slice(body);
    }
    Ok(out)
}

/// Writes `bodies` as consecutive frames; small messages go out in one write.
pub async fn write_frames<W: AsyncWrite + Unpin>(w: &mut W, bodies: &[&[u8]]) -> io::Result<()> {
    let total: usize = bodies.iter().map(|b| b.len() + 4).sum();
    if total <= COALESCE_LIMIT {
        w.write_all(&encode(bodies)?).await?;
    } else {
        for body in bodies {
            w.write_all(&header(body.len())?).await?;
            w.write_all(body).await?;
        }
    }
    w.flush().await
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        let n = r.read(&mut head[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = Vec::with_capacity(len.min(COALESCE_LIMIT));
    let read = r.take(len as u64).read_to_end(&mut body).await?;
    if read < len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(body))
}

/// A frame read with a size limit: its body, or its length when it was over the limit (the
/// body was read and discarded, so the stream stays in step).
#[derive(Debug, PartialEq, Eq)]
pub enum Bounded {
    Body(Vec<u8>),
    Skipped(usize),
}

/// Reads one frame that must be there, keeping its body only if it has at most `max` bytes:
/// a larger body is drained without being held in memory.
pub async fn read_bounded<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Bounded, FrameError> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len <= max {
        let mut body = Vec::with_capacity(len.min(COALESCE_LIMIT));
        let read = r.take(len as u64).read_to_end(&mut body).await?;
        return if read < len {
            Err(FrameError::Truncated)
        } else {
            Ok(Bounded::Body(body))
        };
    }
    let drained = tokio::io::copy(&mut r.take(len as u64), &mut tokio::io::sink()).await?;
    if (drained as usize) < len {
        return Err(FrameError::Truncated);
    }
    Ok(Bounded::Skipped(len))
}

/// Reads one frame that must be there (end of stream is [`FrameError::Truncated`]).
pub async fn read_required<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    read_frame(r).await?.ok_or(FrameError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_reads_skip_large_bodies_and_stay_in_step() {
        let big = vec![7u8; 100_000];
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frames(&mut a, &[b"small", &big, b"next"])
            .await
            .unwrap();
        drop(a);
        assert_eq!(
            read_bounded(&mut b, 1000).await.unwrap(),
            Bounded::Body(b"small".to_vec())
        );
        assert_eq!(
            read_bounded(&mut b, 1000).await.unwrap(),
            Bounded::Skipped(100_000)
        );
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"next");
        assert!(matches!(
            read_bounded(&mut b, 1000).await,
            Err(FrameError::Truncated)
        ));
        let cut = [&header(10).unwrap()[..], b"abc"].concat();
        assert!(matches!(
            read_bounded(&mut cut.as_slice(), 5).await,
            Err(FrameError::Truncated)
        ));
    }

    #[tokio::test]
    async fn roundtrip_small_and_large() {
        let big = vec![7u8; 100_000];
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frames(&mut a, &[b"hi", b"", &big]).await.unwrap();
        drop(a);
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"hi");
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), big);
        assert!(read_frame(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_and_oversized_frames_are_errors() {
        let mut short: &[u8] = &[0, 0, 0, 5, b'a'];
        assert!(matches!(
            read_frame(&mut short).await,
            Err(FrameError::Truncated)
        ));
        let mut half_header: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame(&mut half_header).await,
            Err(FrameError::Truncated)
        ));
        let mut huge: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut huge).await,
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn encode_matches_python_layout() {
        assert_eq!(encode(&[b"ab"]).unwrap(), vec![0, 0, 0, 2, b'a', b'b']);
    }
}
