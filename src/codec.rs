//! The gRPC codec of every generated client and server: prost, with a change on each side.
//!
//! - Decoding: tonic hands the decoder a view of its receive buffer (`DecodeBuf` over a
//!   `BytesMut`); prost decoding through it pays a `BytesMut` advance per field and a split per
//!   `bytes` field. The message is instead taken out of the buffer as one `Bytes` (no copy) and
//!   decoded from that, where advancing is a pointer bump and each `bytes` field a cheap slice.
//! - Encoding: tonic gives every response stream (and every unary response) an encode buffer of
//!   `buffer_size` bytes when the call starts, 8 KiB by default. For a push subscriber that
//!   sits idle, that buffer was most of what it cost the producer (13 KB of 13.9 KB per idle
//!   subscriber with 10,000 attached). Here the buffer starts at 128 bytes and each message
//!   reserves exactly its encoded length before it is written, so an idle stream holds almost
//!   nothing, and a
//!   1,000-event Poll response is written into one allocation instead of growing through
//!   doublings (each one a copy of what was written so far).

use std::marker::PhantomData;

use bytes::Buf as _;
use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// A prost codec that decodes from contiguous `Bytes`; see the module doc.
#[derive(Debug, Clone, Copy)]
pub struct ProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ReservingEncoder<T>;
    type Decoder = BytesDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ReservingEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder(PhantomData)
    }
}

/// How tonic buffers what [`ReservingEncoder`] writes: messages are still gathered into one HTTP/2 write until 32 KiB (tonic's default yield
/// threshold), so a catching-up stream sends big frames.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The encode buffer a call starts with. Not 0: tonic also grows a compressed message's buffer
/// in steps of this size, and divides by it (a client that accepts gzip made the producer
/// panic with 0).
const INITIAL_BUFFER: usize = 128;

/// Encodes a prost message into exactly as much buffer as it needs; see the module doc.
#[derive(Debug)]
pub struct ReservingEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ReservingEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let len = item.encoded_len();
        buf.reserve(len);
        item.encode_raw(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
    }
}

/// Decodes one message from the whole of `buf`, taken as one `Bytes`.
#[derive(Debug)]
pub struct BytesDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for BytesDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let message = buf.copy_to_bytes(buf.remaining());
        // INTERNAL, as tonic-prost maps a malformed message (gRPC status code guidance).
        U::decode(message)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
