//! Kafka's framing: a 4-byte big-endian length, then the request (header and body).
//! Bounded, so a garbage length cannot make the broker allocate gigabytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

use crate::error::BrokerError;

/// Largest request frame accepted; a bigger one closes the connection (Kafka's
/// `socket.request.max.bytes` default is the same 100 MiB).
pub const MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Splits one complete frame off the front of `buf`, if it holds one. A negative or
/// oversized length prefix is an error: the stream position is lost, so the only safe
/// answer is to close the connection.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, BrokerError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 0 || len as usize > MAX_FRAME_BYTES {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "kafka frame length {len} is outside 0..={MAX_FRAME_BYTES}; the client is not speaking the Kafka protocol"
            ),
        });
    }
    let len = len as usize;
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// A whole response frame: length, the header of the version the request's API and
/// version call for, and the body.
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, String> {
    // ApiVersions answers always use header v0: a client that sent a version we do not
    // know must still be able to read our answer.
    let header_version = if api == ApiKey::ApiVersions {
        0
    } else {
        api.response_header_version(version)
    };
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, header_version)
        .map_err(|e| format!("encoding the response header: {e}"))?;
    body.encode(&mut out, version)
        .map_err(|e| format!("encoding the {api:?} v{version} response: {e}"))?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out.freeze())
}
