//! The bounded fuzz run of every CI: each target gets its seeds, its committed corpus
//! (`fuzz/corpus/<target>/`, grown and minimised by libFuzzer runs) and `FUZZ_MUTATIONS` (default
//! 20,000) deterministic mutations of them. A panic anywhere fails the test, naming the target and
//! writing the input to `target/fuzz-failures/` so that `cargo fuzz run <target> <file>` replays it.
//!
//! `cargo test -p exchange-fuzz -- --ignored write_seed_corpus` writes the seeds into the corpus
//! folders (for a first libFuzzer run; they are committed).

use std::path::{Path, PathBuf};

use exchange_fuzz::{TARGETS, mutate};
use exchange_node_core::network::protocol::{AttachmentRequest, DirectoryPush, Parcel, SegmentParcel, TraceRequest, TransferRequest};
use exchange_node_core::network::reconcile::{Direction, ReconcileRequest};
use exchange_wire::api::{BatchSubmitRequest, SignedMessage, WebhookRequest};
use exchange_wire::directory::{KeyRecord, NodeRecord, NodeTree, Segment, UnitRecord, UnitSegment, UnitStatus};
use exchange_wire::document::Attachment;
use exchange_wire::{Envelope, Kind, Priority, PublicKey, UnitAddress, digest_payload, keys, query, receipt, sharing};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

fn addr(s: &str) -> UnitAddress {
    s.parse().unwrap()
}

/// Well-formed inputs of every kind each target reads: where the fuzzer starts.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let key = keys::generate();
    let public = PublicKey(key.verifying_key());
    let mut doc = Envelope::new(Kind::Document, addr("gz.yuexiu/liurong-street"), vec![addr("gz.haizhu/civil-affairs")], vec![addr("gz/civil-affairs")], Priority::Express, "关于做好防汛工作的通知".as_bytes());
    doc.metadata.insert("title".into(), "关于做好防汛工作的通知".into());
    doc.metadata.insert("doc-number".into(), "越六榕〔2005〕12号".into());
    doc.metadata.insert("doc-date".into(), "2025-05-20".into());
    doc.metadata.insert("handling".into(), "action".into());
    doc.metadata.insert("deadline".into(), "2025-06-01".into());
    let scan = Attachment { name: "防汛责任区划图.pdf".into(), media_type: "application/pdf".into(), size: 3 << 20, sha256: digest_payload(b"scan") };
    scan.describe(1, &mut doc.metadata);
    let signed_doc = doc.clone().sign(&key);
    let signed_for = receipt::signed_for(addr("gz.haizhu/civil-affairs"), addr("gz.yuexiu/liurong-street"), signed_doc.id, Priority::Express);
    let question = query::question(addr("gz.haizhu/public-security"), addr("gz.yuexiu/civil-affairs"), "person.alive", 1_900_000_000_000, br#"{"id_number":"440104195001011234"}"#);
    let record = sharing::record(addr("gz.yuexiu/civil-affairs"), "person.death", "440104195001011234", br#"{"id_number":"440104195001011234"}"#);
    let request = sharing::subscription_request(addr("gz/hrss"), addr("gz.yuexiu/civil-affairs"), "person.death", sharing::StartFrom::Beginning, "社保停发");
    let envelopes = [doc.clone(), signed_for, question, record.clone(), request];

    let tree = NodeTree {
        version: 3,
        nodes: vec![
            NodeRecord { id: "gz".parse().unwrap(), name: "广州".into(), tier: "city".into(), parent: None, public_key: public, addresses: vec!["/ip4/127.0.0.1/tcp/7000".into()], previous_keys: vec![] },
            NodeRecord { id: "gz.yuexiu".parse().unwrap(), name: "越秀".into(), tier: "district".into(), parent: Some("gz".parse().unwrap()), public_key: public, addresses: vec![], previous_keys: vec![] },
        ],
    };
    let units = UnitSegment {
        node: "gz.yuexiu".parse().unwrap(),
        version: 7,
        units: vec![UnitRecord { address: addr("gz.yuexiu/liurong-street"), name: "六榕街道".into(), kind: "street-office".into(), uscc: None, status: UnitStatus::Active, keys: vec![KeyRecord { public_key: public, not_before_ms: 0, not_after_ms: None, revoked_at_ms: Some(1_900_000_000_000) }] }],
    };
    let catalog = r#"{"version":2,"topic":[{"name":"person.death","title":"死亡登记","owner":"gz.yuexiu/civil-affairs","sharing":"open","subject_field":"id_number","schema":{"type":"object","required":["id_number"]}}]}"#.as_bytes().to_vec();
    let (tree_env, tree_payload) = Segment::Tree(tree.clone()).envelope(&"gz".parse().unwrap());
    let signed_tree = tree_env.sign(&key);

    let message = |e: &Envelope, payload: &[u8]| serde_json::to_vec(&SignedMessage::new(&e.clone().sign(&key), payload)).unwrap();
    let tagged = |tag: u8, body: Vec<u8>| [vec![tag], body].concat();
    let cbor = |tag: u8, v: &dyn erased::Cbor| tagged(tag, v.cbor());
    let parcel = Parcel { header: signed_doc.bytes.clone(), signature: signed_doc.signature.to_vec(), payload: "关于做好防汛工作的通知".as_bytes().to_vec(), recipients: vec![addr("gz.haizhu/civil-affairs")], hops: vec![], sender_segment_version: 7 };

    let mut out: Vec<(&str, Vec<u8>)> = Vec::new();
    for e in &envelopes {
        out.push(("envelope", e.canonical_bytes()));
    }
    out.push(("signed_message", message(&doc, "关于做好防汛工作的通知".as_bytes())));
    out.push(("signed_message", message(&record, br#"{"id_number":"440104195001011234"}"#)));
    out.push(("api_json", tagged(0, serde_json::to_vec(&BatchSubmitRequest { messages: vec![serde_json::from_slice(&message(&doc, "关于做好防汛工作的通知".as_bytes())).unwrap()] }).unwrap())));
    out.push(("api_json", tagged(1, br#"{"receipts":[]}"#.to_vec())));
    out.push(("api_json", tagged(2, serde_json::to_vec(&WebhookRequest { url: "https://10.1.2.3/hook".into(), from_start: true }).unwrap())));
    out.push(("api_json", tagged(3, br#"{"older_than_days":90}"#.to_vec())));
    out.push(("api_json", tagged(7, b"gz.yuexiu/liurong-street".to_vec())));
    out.push(("api_json", tagged(7, public.to_hex().into_bytes())));
    out.push(("peer_request", cbor(0, &TransferRequest { parcels: vec![parcel] })));
    out.push(("peer_request", cbor(1, &DirectoryPush { segments: vec![SegmentParcel { header: signed_tree.bytes.clone(), signature: signed_tree.signature.to_vec(), payload: tree_payload }] })));
    out.push(("peer_request", cbor(2, &AttachmentRequest::Chunk { sha256: digest_payload(b"scan"), size: 3 << 20, offset: 1 << 20, bytes: b"scan".to_vec() })));
    out.push(("peer_request", cbor(3, &TraceRequest { message_id: signed_doc.id.0.to_vec() })));
    out.push(("peer_request", cbor(4, &ReconcileRequest::List { direction: Direction::FromAsker, since_ms: 1, until_ms: 2, after: 0, limit: 100 })));
    out.push(("directory_segment", tagged(9, serde_json::to_vec(&tree).unwrap())));
    out.push(("directory_segment", tagged(22, serde_json::to_vec(&units).unwrap())));
    out.push(("directory_segment", tagged(8, catalog)));
    let mut meta = Vec::new();
    for (k, v) in &doc.metadata {
        meta.extend_from_slice(format!("{k}\0{v}\0").as_bytes());
    }
    out.push(("attachment_metadata", meta));
    out.push(("key_file", format!("# unit key of gz.yuexiu/liurong-street\n{}\n", key.to_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()).into_bytes()));
    out.push(("key_file", public.to_hex().into_bytes()));
    out
}

/// CBOR of any of the protocol types, as the node's codecs write it.
mod erased {
    pub trait Cbor {
        fn cbor(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Cbor for T {
        fn cbor(&self) -> Vec<u8> {
            cbor4ii::serde::to_vec(Vec::new(), self).unwrap()
        }
    }
}

/// Runs `target` on `input`; on a panic, keeps the input and fails naming it.
fn run(name: &str, target: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| target(input)).is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{name}-{}", digest_payload(input).to_hex()));
        std::fs::write(&file, input).unwrap();
        panic!("fuzz target {name} panicked on the input kept in {}", file.display());
    }
}

#[test]
fn every_target_survives_its_corpus_and_mutations() {
    let mutations: usize = std::env::var("FUZZ_MUTATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let seeds = seeds();
    for &(name, target) in TARGETS {
        let mut inputs: Vec<Vec<u8>> = seeds.iter().filter(|(t, _)| *t == name).map(|(_, s)| s.clone()).collect();
        assert!(!inputs.is_empty(), "no seed for target {name}");
        let committed: Vec<Vec<u8>> = std::fs::read_dir(corpus_dir(name))
            .unwrap_or_else(|e| panic!("the corpus of {name} ({}): {e}", corpus_dir(name).display()))
            .map(|f| std::fs::read(f.unwrap().path()).unwrap())
            .collect();
        assert!(!committed.is_empty(), "the committed corpus of {name} is empty");
        inputs.extend(committed);
        for input in &inputs {
            run(name, target, input);
        }
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ name.len() as u64;
        for i in 0..mutations {
            let input = mutate(&inputs[i % inputs.len()], &inputs[(i * 7 + 3) % inputs.len()], &mut rng);
            run(name, target, &input);
        }
        eprintln!("{name}: {} corpus inputs and {mutations} mutations, no panic", inputs.len());
    }
}

/// The seeds accepted by their decoders: a seed the parser refuses would start the fuzzer nowhere.
#[test]
fn the_seeds_are_well_formed() {
    for (name, seed) in seeds() {
        match name {
            "envelope" => drop(Envelope::from_canonical_bytes(&seed).expect("seed envelope decodes")),
            "signed_message" => drop(serde_json::from_slice::<SignedMessage>(&seed).unwrap().decode().expect("seed message decodes")),
            "peer_request" if seed[0] == 0 => {
                let batch: TransferRequest = cbor4ii::serde::from_slice(&seed[1..]).expect("seed batch decodes");
                assert_eq!(batch.parcels.len(), 1);
            }
            "directory_segment" => {
                let (signed, payload) = exchange_fuzz::segment_envelope(&seed).expect("a type byte");
                Segment::from_envelope(&signed, payload).unwrap_or_else(|e| panic!("seed segment {}: {e}", seed[0]));
            }
            "key_file" if seed.starts_with(b"#") => drop(keys::parse(std::str::from_utf8(&seed).unwrap(), "seed").expect("seed key parses")),
            _ => {}
        }
    }
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    for (name, seed) in seeds() {
        let dir = corpus_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{}", &digest_payload(&seed).to_hex()[..16])), seed).unwrap();
    }
}
