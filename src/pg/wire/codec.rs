//! The one adapter from the sans-IO decoders to tokio: `tokio_util::codec` decoders for each
//! phase and direction (for `Framed`/`FramedRead`), and [`read_with`], a read loop for code that
//! must stay in control of the raw stream (the handshake before TLS).
//!
//! Every encoder writes frames as given: the proxy forwards `frame()` bytes, or bytes a builder
//! made.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::{Decoder, Encoder};

use super::{
    backend::{self, Backend},
    frontend::{self, Frontend, Startup},
    WireError,
};

/// A read or decode failure on a stream of protocol messages.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decodes the first message of a client connection. After an `SslRequest` the caller takes the
/// stream back (`Framed::into_parts`) to run TLS, and must refuse the connection if the read
/// buffer is not empty: bytes sent before the handshake are not protected by it.
#[derive(Debug, Clone, Copy)]
pub struct StartupCodec {
    pub max_len: usize,
}

/// Decodes client messages after startup.
#[derive(Debug, Clone, Copy)]
pub struct FrontendCodec {
    pub max_len: usize,
}

/// Decodes server messages.
#[derive(Debug, Clone, Copy)]
pub struct BackendCodec {
    pub max_len: usize,
}

impl Decoder for StartupCodec {
    type Item = Startup;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Startup>, CodecError> {
        Ok(frontend::decode_startup(src, self.max_len)?)
    }
}

impl Decoder for FrontendCodec {
    type Item = Frontend;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frontend>, CodecError> {
        Ok(frontend::decode(src, self.max_len)?)
    }
}

impl Decoder for BackendCodec {
    type Item = Backend;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Backend>, CodecError> {
        Ok(backend::decode(src, self.max_len)?)
    }
}

macro_rules! frame_encoder {
    ($($codec:ty),*) => {$(
        impl Encoder<Bytes> for $codec {
            type Error = CodecError;

            fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
                dst.extend_from_slice(&frame);
                Ok(())
            }
        }
    )*};
}

frame_encoder!(StartupCodec, FrontendCodec, BackendCodec);

/// Reads from `r` into `buf` until `decode` yields a message. `Ok(None)`: the peer closed the
/// connection between messages. Bytes after the message stay in `buf`.
pub async fn read_with<R, T>(
    r: &mut R,
    buf: &mut BytesMut,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, WireError>,
) -> Result<Option<T>, CodecError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    loop {
        if let Some(m) = decode(buf)? {
            return Ok(Some(m));
        }
        if r.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(CodecError::Truncated)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wire::{backend::TransactionStatus, DEFAULT_MAX_MESSAGE_LEN};

    #[tokio::test]
    async fn read_with_reads_across_chunks_and_keeps_the_rest() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&backend::parameter_status("a", "b"));
        wire.extend_from_slice(&backend::ready_for_query(TransactionStatus::Idle));
        wire.extend_from_slice(b"D\0");
        let (mut client, mut server) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            server.write_all(&wire).await.unwrap();
        });
        let mut buf = BytesMut::new();
        let decode = |b: &mut BytesMut| backend::decode(b, DEFAULT_MAX_MESSAGE_LEN);
        let m = read_with(&mut client, &mut buf, decode).await.unwrap();
        assert!(matches!(m, Some(Backend::ParameterStatus { .. })));
        let m = read_with(&mut client, &mut buf, decode).await.unwrap();
        assert!(matches!(m, Some(Backend::ReadyForQuery { .. })));
        writer.await.unwrap();
        let e = read_with(&mut client, &mut buf, decode).await.unwrap_err();
        assert!(matches!(e, CodecError::Truncated), "{e}");
    }

    #[tokio::test]
    async fn read_with_reports_a_clean_close() {
        let (mut client, server) = tokio::io::duplex(16);
        drop(server);
        let mut buf = BytesMut::new();
        let m = read_with(&mut client, &mut buf, |b| {
            frontend::decode(b, DEFAULT_MAX_MESSAGE_LEN)
        })
        .await
        .unwrap();
        assert!(m.is_none());
    }

    #[test]
    fn codecs_decode_and_encode_frames() {
        let mut codec = FrontendCodec { max_len: 100 };
        let q = frontend::query("select 1").unwrap();
        let mut buf = BytesMut::from(&q[..]);
        let m = codec.decode(&mut buf).unwrap().unwrap();
        let mut out = BytesMut::new();
        codec.encode(m.frame().clone(), &mut out).unwrap();
        assert_eq!(&out[..], &q[..]);
        let mut buf = BytesMut::from(&frontend::query(&"x".repeat(200)).unwrap()[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Wire(WireError::TooLong { .. }))
        ));
        let mut startup = StartupCodec { max_len: 100 };
        let mut buf = BytesMut::from(&frontend::ssl_request()[..]);
        assert_eq!(startup.decode(&mut buf).unwrap(), Some(Startup::SslRequest));
        let mut backend = BackendCodec { max_len: 100 };
        let mut buf = BytesMut::from(&backend::auth_ok()[..]);
        assert!(backend.decode(&mut buf).unwrap().is_some());
    }
}
