//! The gRPC codec of every generated client and server: prost, with one change on the decoding
//! side. tonic hands the decoder a view of its receive buffer (`DecodeBuf` over a `BytesMut`);
//! prost decoding through it pays a `BytesMut` advance per field and a split per `bytes` field.
//! The message is instead taken out of the buffer as one `Bytes` (no copy) and decoded from
//! that, where advancing is a pointer bump and each `bytes` field a cheap slice. Encoding is
//! tonic-prost's own.

use std::marker::PhantomData;

use bytes::Buf as _;
use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
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
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = BytesDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder(PhantomData)
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
