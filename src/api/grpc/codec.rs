//! The codec of every generated service (build.rs names it): prost's, but a message that
//! does not decode (an invalid varint, invalid UTF-8 in a string, a wrong wire type) is the
//! client's error, INVALID_ARGUMENT with tessera's ErrorDetail, not prost's INTERNAL with the
//! decoder's text.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::status::status;
use crate::domain::OtpError;

#[derive(Debug, Clone)]
pub struct ContractCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ContractCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ContractCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ContractDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ContractDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

#[derive(Debug, Clone)]
pub struct ContractDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for ContractDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0
            .decode(buf)
            .map_err(|_| status(&OtpError::MalformedMessage))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// Decodes one request message as the services do. (The protobuf fuzz target's entry.)
pub fn decode_message<U: Message + Default>(bytes: &[u8]) -> Result<U, OtpError> {
    U::decode(bytes).map_err(|_| OtpError::MalformedMessage)
}
