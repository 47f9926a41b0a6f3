//! The custody-transfer codec: CBOR, like the other protocols, with one difference. libp2p's codec
//! drops a request over its size limit without a word, which the sender cannot tell from a broken
//! link: it would send the same batch again and again, and nothing behind it would ever pass. Here
//! the bytes of an oversized batch are read and thrown away as they arrive (never held beyond the
//! limit), and the request comes out as [`RelayRequest::Oversized`], which the node answers with
//! `too_large` so that the sender splits the batch.

use std::io;

use futures::prelude::*;
use libp2p::StreamProtocol;
use libp2p::request_response;

use super::protocol::{RelayRequest, TransferRequest, TransferResponse};

/// CBOR for [`RelayRequest`] and [`TransferResponse`], with the limits of this node.
#[derive(Debug, Clone)]
pub struct RelayCodec {
    /// The largest request this node reads (see `node::max_request_bytes`).
    max_request_bytes: u64,
    max_response_bytes: u64,
}

impl RelayCodec {
    pub fn new(max_request_bytes: u64, max_response_bytes: u64) -> RelayCodec {
        RelayCodec { max_request_bytes, max_response_bytes }
    }
}

/// Reads until the end of the stream, keeping at most `keep` bytes: the bytes and whether there were
/// more (those were read and dropped). Reads in 64 KiB chunks appended with a copy:
/// `AsyncReadExt::read_to_end` zeroes every spare byte of its buffer through an iterator, which takes
/// seconds per 8 MiB in an unoptimised build.
async fn read_bounded<T: AsyncRead + Unpin>(io: &mut T, keep: u64) -> io::Result<(Vec<u8>, bool)> {
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut more = false;
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok((out, more));
        }
        let room = keep.saturating_sub(out.len());
        if n > room {
            more = true;
            out = Vec::new();
        }
        if !more {
            out.extend_from_slice(&chunk[..n]);
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    cbor4ii::serde::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

async fn encode<W: AsyncWrite + Unpin + Send, T: serde::Serialize>(io: &mut W, value: &T) -> io::Result<()> {
    let bytes = cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| io::Error::other(e.to_string()))?;
    io.write_all(&bytes).await
}

impl request_response::Codec for RelayCodec {
    type Protocol = StreamProtocol;
    type Request = RelayRequest;
    type Response = TransferResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<RelayRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        // The sender closes its side after the request, so this ends; the request timeout bounds it
        // in time all the same.
        let (bytes, more) = read_bounded(io, self.max_request_bytes).await?;
        if more {
            return Ok(RelayRequest::Oversized { limit: self.max_request_bytes });
        }
        Ok(RelayRequest::Batch(decode::<TransferRequest>(&bytes)?))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<TransferResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let (bytes, more) = read_bounded(io, self.max_response_bytes).await?;
        if more {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the answer to a batch is larger than this node reads"));
        }
        decode(&bytes)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, request: RelayRequest) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match request {
            RelayRequest::Batch(batch) => encode(io, &batch).await,
            RelayRequest::Oversized { .. } => Err(io::Error::other("an oversized-batch note is never sent")),
        }
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, response: TransferResponse) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        encode(io, &response).await
    }
}

#[cfg(test)]
mod tests {
    use request_response::Codec as _;

    use super::*;
    use crate::network::protocol::{Parcel, ParcelResult};

    fn parcel(payload: usize) -> Parcel {
        Parcel {
            header: vec![1; 300],
            signature: vec![2; 64],
            payload: vec![3; payload],
            recipients: vec!["gz.haizhu/civil-affairs".parse().unwrap()],
            hops: vec![],
            sender_segment_version: 1,
        }
    }

    fn protocol() -> StreamProtocol {
        StreamProtocol::new("/t")
    }

    async fn written(request: RelayRequest) -> Vec<u8> {
        let mut out = futures::io::Cursor::new(Vec::new());
        RelayCodec::new(u64::MAX, u64::MAX).write_request(&protocol(), &mut out, request).await.unwrap();
        out.into_inner()
    }

    #[tokio::test]
    async fn a_batch_within_the_limit_is_read_as_sent() {
        let bytes = written(RelayRequest::Batch(TransferRequest { parcels: vec![parcel(1000), parcel(5)] })).await;
        let mut codec = RelayCodec::new(bytes.len() as u64, 1024);
        let read = codec.read_request(&protocol(), &mut futures::io::Cursor::new(bytes)).await.unwrap();
        let RelayRequest::Batch(b) = read else { panic!("read as oversized") };
        assert_eq!(b.parcels.len(), 2);
        assert_eq!(b.parcels[0].payload.len(), 1000);
    }

    #[tokio::test]
    async fn an_oversized_batch_is_drained_and_noted_not_dropped() {
        let bytes = written(RelayRequest::Batch(TransferRequest { parcels: vec![parcel(100_000)] })).await;
        let total = bytes.len() as u64;
        let mut codec = RelayCodec::new(total - 1, 1024);
        let mut stream = futures::io::Cursor::new(bytes);
        let read = codec.read_request(&protocol(), &mut stream).await.unwrap();
        assert!(matches!(read, RelayRequest::Oversized { limit } if limit == total - 1), "{read:?}");
        assert_eq!(stream.position(), total, "the rest of the request was read (and dropped)");
    }

    #[tokio::test]
    async fn a_too_large_answer_round_trips_and_old_answers_still_read() {
        let mut codec = RelayCodec::new(1, 1 << 20);
        let mut out = futures::io::Cursor::new(Vec::new());
        let answer = TransferResponse { results: vec![], too_large: Some(33 << 20) };
        codec.write_response(&protocol(), &mut out, answer).await.unwrap();
        let back = codec.read_response(&protocol(), &mut futures::io::Cursor::new(out.into_inner())).await.unwrap();
        assert_eq!(back.too_large, Some(33 << 20));
        // An answer from a node that does not know the field.
        #[derive(serde::Serialize)]
        struct Old {
            results: Vec<ParcelResult>,
        }
        let old = cbor4ii::serde::to_vec(Vec::new(), &Old { results: vec![ParcelResult::Stored] }).unwrap();
        let back = codec.read_response(&protocol(), &mut futures::io::Cursor::new(old)).await.unwrap();
        assert_eq!((back.results, back.too_large), (vec![ParcelResult::Stored], None));
    }

    /// The JSON length of a list, as the outbox stores it.
    fn json_len<T: serde::Serialize>(v: &T) -> usize {
        serde_json::to_vec(v).unwrap().len()
    }

    fn bound(parcels: &[Parcel]) -> usize {
        use crate::network::protocol::{REQUEST_OVERHEAD_BYTES, parcel_size_bound};
        let parcel = |p: &Parcel| parcel_size_bound(p.header.len(), p.signature.len(), p.payload.len(), json_len(&p.recipients), json_len(&p.hops));
        REQUEST_OVERHEAD_BYTES + parcels.iter().map(parcel).sum::<usize>()
    }

    #[tokio::test]
    async fn the_size_bound_covers_what_the_codec_writes() {
        use exchange_wire::receipt::Hop;
        let hop = |n: &str, at_ms| Hop { node: n.parse().unwrap(), at_ms };
        let many: Vec<exchange_wire::UnitAddress> =
            (0..4096).map(|i| format!("gz.district-{}/unit-with-a-rather-long-name-{i}", i % 13).parse().unwrap()).collect();
        let shapes = vec![
            vec![parcel(0)],
            vec![parcel(23), parcel(24), parcel(255), parcel(256), parcel(65_535), parcel(65_536)],
            vec![Parcel { header: vec![0; 256 * 1024], recipients: many, hops: vec![hop("gz.yuexiu", u64::MAX), hop("gz", 1)], ..parcel(0) }],
            (0..300).map(|_| Parcel { hops: vec![hop("gz.yuexiu", 1_760_000_000_000); 3], sender_segment_version: u64::MAX, ..parcel(10) }).collect(),
        ];
        for parcels in shapes {
            let n = parcels.len();
            let b = bound(&parcels);
            let written = written(RelayRequest::Batch(TransferRequest { parcels })).await.len();
            assert!(written <= b, "{n} parcels: {written} bytes written, bound {b}");
            assert!(b - written <= b / 50 + n * 160, "{n} parcels: the bound stays close ({written} written, bound {b})");
        }
    }

    #[test]
    fn a_peer_with_the_same_settings_reads_a_full_batch_and_the_largest_message() {
        use crate::network::protocol::{PARCEL_OVERHEAD_BYTES, REQUEST_OVERHEAD_BYTES};
        use exchange_wire::envelope::{MAX_HEADER_BYTES, MAX_RECIPIENTS};
        let city = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/city.toml");
        let cfg = crate::config::NodeConfig::load(&city).unwrap();
        let limit = cfg.max_request_bytes() as usize;
        // A full batch may overshoot by nothing: the first parcel goes alone when it is larger.
        assert!(cfg.relay.batch_max_bytes + REQUEST_OVERHEAD_BYTES < limit);
        // The largest single message: payload, header, and its recipients again (at most the header's
        // size plus three JSON characters each), a deep path of hops.
        let largest = cfg.limits.max_payload_bytes as usize + 2 * MAX_HEADER_BYTES + 3 * MAX_RECIPIENTS + 64 + 64 * 1024 + PARCEL_OVERHEAD_BYTES;
        assert!(largest + REQUEST_OVERHEAD_BYTES < limit, "{largest} vs {limit}");
    }
}
