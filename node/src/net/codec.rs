//! The sync protocol's frames: a 4-byte big-endian length, then that many
//! opaque bytes. A reader refuses a length above its limit before allocating.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::Codec;
use libp2p::StreamProtocol;

/// Reads one frame of at most `max` bytes.
pub async fn read_frame<T: AsyncRead + Unpin>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit {max}"),
        ));
    }
    let mut data = vec![0u8; len];
    io.read_exact(&mut data).await?;
    Ok(data)
}

/// Writes one frame, refusing data over `max` bytes.
pub async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, data: &[u8], max: usize) -> io::Result<()> {
    if data.len() > max {
        let len = data.len();
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {len} bytes exceeds the limit {max}"),
        ));
    }
    let len = u32::try_from(data.len()).expect("limits fit in u32");
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

/// Request-response codec for opaque, bounded byte strings.
#[derive(Clone, Debug)]
pub struct SyncCodec {
    pub request_bytes_max: usize,
    pub response_bytes_max: usize,
}

impl SyncCodec {
    pub fn new(request_bytes_max: usize, response_bytes_max: usize) -> Self {
        assert!(request_bytes_max <= u32::MAX as usize && response_bytes_max <= u32::MAX as usize);
        SyncCodec { request_bytes_max, response_bytes_max }
    }
}

impl Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.request_bytes_max).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.response_bytes_max).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, request: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request, self.request_bytes_max).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, response: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response, self.response_bytes_max).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    /// Goal: a frame round-trips at exactly the limit, and one byte more is refused on write and on read.
    #[test]
    fn frame_limit_is_exact() {
        let data = vec![7u8; 100];
        let mut wire = Cursor::new(Vec::new());
        block_on(write_frame(&mut wire, &data, 100)).unwrap();
        let bytes = wire.into_inner();
        assert_eq!(bytes.len(), 104);
        assert_eq!(block_on(read_frame(&mut Cursor::new(bytes.clone()), 100)).unwrap(), data);

        let err = block_on(read_frame(&mut Cursor::new(bytes), 99)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = block_on(write_frame(&mut Cursor::new(Vec::new()), &[0u8; 101], 100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// Goal: a huge length prefix is refused before anything is allocated or read, and a short body is an error.
    #[test]
    fn hostile_prefixes_are_refused() {
        let huge = u32::MAX.to_be_bytes().to_vec();
        let err = block_on(read_frame(&mut Cursor::new(huge), 1 << 20)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let mut short = 10u32.to_be_bytes().to_vec();
        short.extend_from_slice(&[1, 2, 3]);
        let err = block_on(read_frame(&mut Cursor::new(short), 100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
