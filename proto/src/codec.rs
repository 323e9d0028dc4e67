//! A gRPC codec that hands the request body over as `Bytes`.
//!
//! The generated tonic server and client decode every request into prost
//! structs; on the TraceService route we want the encoded bytes instead (the
//! data path never decodes a span), so both sides use this codec. Responses
//! are tiny and are decoded normally.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// The gRPC path of `TraceService/Export`.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The gRPC service name, for routing.
pub const SERVICE_NAME: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
/// The gRPC path of `LogsService/Export`.
pub const LOGS_EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
/// The logs service name, for routing.
pub const LOGS_SERVICE_NAME: &str = "opentelemetry.proto.collector.logs.v1.LogsService";

/// Encodes `E` and decodes `D`, where either side may be raw [`Bytes`].
#[derive(Debug)]
pub struct RawCodec<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for RawCodec<E, D> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

/// The server side: requests arrive as bytes, responses are prost messages.
pub type ServerCodec = RawCodec<crate::ExportTraceServiceResponse, Bytes>;
/// The client side: requests leave as bytes, responses are prost messages.
pub type ClientCodec = RawCodec<Bytes, crate::ExportTraceServiceResponse>;

/// A message the codec can write.
pub trait Encode: Send + 'static {
    fn encode_to(self, dst: &mut EncodeBuf<'_>) -> Result<(), Status>;
}

/// A message the codec can read.
pub trait Decode: Send + Sized + 'static {
    fn decode_from(src: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

impl Encode for Bytes {
    fn encode_to(self, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(self);
        Ok(())
    }
}

impl Decode for Bytes {
    fn decode_from(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        // DecodeBuf is backed by a BytesMut: this splits it off, no copy.
        Ok(src.copy_to_bytes(src.remaining()))
    }
}

impl Encode for crate::ExportTraceServiceResponse {
    fn encode_to(self, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        self.encode(dst)
            .map_err(|e| Status::internal(format!("encoding response: {e}")))
    }
}

impl Decode for crate::ExportTraceServiceResponse {
    fn decode_from(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        Message::decode(src).map_err(|e| Status::internal(format!("decoding response: {e}")))
    }
}

impl<E: Encode, D: Decode> Codec for RawCodec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = RawEncoder<E>;
    type Decoder = RawDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct RawEncoder<E>(PhantomData<fn(E)>);

impl<E: Encode> Encoder for RawEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_to(dst)
    }
}

#[derive(Debug)]
pub struct RawDecoder<D>(PhantomData<fn() -> D>);

impl<D: Decode> Decoder for RawDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode_from(src).map(Some)
    }
}
