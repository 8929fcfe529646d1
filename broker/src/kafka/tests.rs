//! The frame codec and request parser, driven with bytes (the listener itself is tested
//! through real brokers and real Kafka clients in tests/kafka.rs).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use proptest::prelude::*;

use super::*;

fn api_versions_frame(version: i16, correlation_id: i32) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id);
    let mut body = BytesMut::new();
    header
        .encode(
            &mut body,
            ApiKey::ApiVersions.request_header_version(version),
        )
        .unwrap();
    ApiVersionsRequest::default()
        .encode(&mut body, version)
        .unwrap();
    let mut out = BytesMut::new();
    out.put_i32(body.len() as i32);
    out.extend_from_slice(&body);
    out.freeze()
}

#[test]
fn a_supported_request_parses_with_its_header() {
    let mut buf = BytesMut::from(&api_versions_frame(3, 7)[..]);
    let body = split_frame(&mut buf).unwrap().unwrap();
    let parsed = parse(body).unwrap();
    assert_eq!(
        (parsed.api, parsed.version, parsed.header.correlation_id),
        (ApiKey::ApiVersions, 3, 7)
    );
}

#[test]
fn a_too_new_api_versions_is_answered_in_v0_with_unsupported_version() {
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::ApiVersions as i16);
    body.put_i16(99);
    body.put_i32(42);
    let Err(Outcome::Respond(frame)) = parse(body.freeze()) else {
        panic!("expected an answer")
    };
    let mut frame = frame.slice(4..);
    let header = ResponseHeader::decode(&mut frame, 0).unwrap();
    let response = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(header.correlation_id, 42);
    assert_eq!(response.error_code, UNSUPPORTED_VERSION);
    assert_eq!(response.api_keys, supported_apis());
}

#[test]
fn unknown_keys_unsupported_versions_and_short_frames_close_the_connection() {
    let frame = |key: i16, version: i16| {
        let mut b = BytesMut::new();
        b.put_i16(key);
        b.put_i16(version);
        b.put_i32(1);
        b.freeze()
    };
    for (body, why) in [
        (frame(9999, 0), "unknown api key"),
        (frame(ApiKey::Produce as i16, 0), "not supported"),
        (frame(ApiKey::Fetch as i16, 99), "not supported"),
        (Bytes::from_static(&[0, 18, 0]), "no header"),
        (frame(ApiKey::Metadata as i16, 1), "bad Metadata"),
    ] {
        match parse(body) {
            Err(Outcome::Close(reason)) => assert!(reason.contains(why), "{reason}"),
            other => panic!("expected a close ({why}), got {other:?}"),
        }
    }
}

#[test]
fn oversized_and_negative_lengths_are_refused_and_partial_frames_wait() {
    for len in [i32::MAX, -1, (MAX_FRAME_BYTES + 1) as i32] {
        let mut buf = BytesMut::from(&len.to_be_bytes()[..]);
        assert!(split_frame(&mut buf).is_err(), "length {len}");
    }
    let full = api_versions_frame(3, 1);
    let mut buf = BytesMut::from(&full[..full.len() - 1]);
    assert_eq!(split_frame(&mut buf).unwrap(), None);
    buf.extend_from_slice(&full[full.len() - 1..]);
    assert!(split_frame(&mut buf).unwrap().is_some());
    assert!(buf.is_empty());
}

#[test]
fn every_advertised_api_has_a_handler() {
    // The dispatcher answers "not implemented" (and closes) for anything else; the
    // advertised list must not promise what it cannot do.
    let handled = [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::Metadata,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::FindCoordinator,
        ApiKey::JoinGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::SyncGroup,
        ApiKey::DescribeGroups,
        ApiKey::ListGroups,
        ApiKey::ApiVersions,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::InitProducerId,
        ApiKey::DescribeConfigs,
        ApiKey::DescribeCluster,
    ];
    for (api, _, _) in SUPPORTED {
        assert!(handled.contains(api), "{api:?} advertised but not handled");
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_frame_codec_or_the_parser(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(body)) = split_frame(&mut buf) {
            let _ = parse(body);
        }
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic_the_parser(
        key in prop::sample::select(SUPPORTED.iter().map(|(k, _, _)| *k as i16).collect::<Vec<_>>()),
        version in 0i16..12,
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut body = BytesMut::new();
        body.put_i16(key);
        body.put_i16(version);
        body.put_i32(1);
        body.put_i16(-1); // null client id
        body.extend_from_slice(&tail);
        let _ = parse(body.freeze());
    }

    #[test]
    fn truncated_valid_requests_never_panic(cut in 0usize..40, version in 0i16..4) {
        let full = api_versions_frame(version, 3);
        let body = full.slice(4..);
        let cut = cut.min(body.len());
        let _ = parse(body.slice(..cut));
    }
}

/// Inputs that once broke a decoder, kept as a corpus: each must be refused with a
/// close, not a crash.
#[test]
fn the_regression_corpus_closes_cleanly() {
    let corpus: &[(&str, &[u8])] = &[
        // Metadata v1, null client id, then a topic array declaring 2^31-1 entries: the
        // unpatched kafka-protocol aborted on a ~190 GB Vec::with_capacity.
        (
            "array-count bomb",
            &[0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
        ),
        // Fetch v11 with a huge topics count.
        (
            "fetch bomb",
            &[
                0, 1, 0, 11, 0, 0, 0, 2, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff,
            ],
        ),
        // JoinGroup v7 (flexible): compact array length as a 5-byte varint.
        (
            "compact bomb",
            &[
                0, 11, 0, 7, 0, 0, 0, 3, 0xff, 0xff, 0, 2, b'g', 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0,
                2, b'c', 0xff, 0xff, 0xff, 0xff, 0x07,
            ],
        ),
    ];
    for (name, bytes) in corpus {
        match parse(Bytes::from_static(bytes)) {
            Err(Outcome::Close(_)) => {}
            other => panic!("{name}: expected a close, got {other:?}"),
        }
    }
}
