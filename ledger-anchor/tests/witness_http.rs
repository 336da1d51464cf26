//! The C2SP tlog-witness HTTP API of our witness, one test per status the spec gives
//! (`reference/c2sp/tlog-witness.md`, "add-checkpoint" and "Monitor Retrieval Mechanism"),
//! each written from the spec's sentence, which it quotes. The server runs in this process on
//! a loopback port and is spoken to over real HTTP; malformed requests are sent as raw bodies.
//! A refusal must leave the witness's state as it was (checked through the monitoring
//! endpoint).

use bytes::Bytes;
use fedledger_ledger::http::{Submitted, WitnessClient, serve_witness};
use fedledger_ledger::merkle::{self, MemoryTree};
use fedledger_ledger::note::{Checkpoint, NoteSigner, SignedCheckpoint, SignedNote};
use fedledger_ledger::witness::{AddCheckpoint, Witness};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ring::signature::Ed25519KeyPair;

const ORIGIN: &str = "log.example/witnessed";

fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    log: NoteSigner,
    witness: NoteSigner,
    tree: MemoryTree,
    server: fedledger_ledger::http::WitnessServer,
}

impl Setup {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = NoteSigner::log(ORIGIN, key(1)).unwrap();
        let witness = NoteSigner::witness("witness.example/w1", key(2)).unwrap();
        let w = Witness::open(
            &dir.path().join("w"),
            witness.clone(),
            log.verifier_key().clone(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = serve_witness(listener, vec![w]).await.unwrap();
        Self {
            _dir: dir,
            log,
            witness,
            tree: MemoryTree::from_entries((0..40u8).map(|i| vec![i])),
            server,
        }
    }

    fn checkpoint(&self, size: u64) -> Vec<u8> {
        SignedCheckpoint::sign(
            Checkpoint::new(ORIGIN, size, self.tree.root_at(size).unwrap()),
            &self.log,
        )
        .encode()
        .into_bytes()
    }

    fn request(&self, old: u64, size: u64) -> Vec<u8> {
        AddCheckpoint {
            old_size: old,
            proof: if old == 0 {
                Vec::new()
            } else {
                merkle::consistency_proof(&self.tree, old, size).unwrap()
            },
            checkpoint: self.checkpoint(size),
        }
        .encode()
    }

    /// POSTs `body` to add-checkpoint: status, content type, body.
    async fn post(&self, body: Vec<u8>) -> (u16, String, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let req = http::Request::post(format!("{}add-checkpoint", self.server.url()))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    /// The size the monitoring endpoint reports (None: 404).
    async fn held(&self) -> Option<u64> {
        let c = WitnessClient::new(&self.server.url()).unwrap();
        let note = c.latest(ORIGIN).await.unwrap()?;
        let cp = SignedCheckpoint::open(&note, self.log.verifier_key()).unwrap();
        Some(cp.checkpoint.size)
    }

    /// Cosigns size 5 from nothing, so the witness holds a checkpoint.
    async fn hold_5(&self) {
        assert_eq!(self.post(self.request(0, 5)).await.0, 200);
        assert_eq!(self.held().await, Some(5));
    }
}

/// "The response body MUST be a sequence of one or more note signature lines, each starting
/// with the — character (U+2014) and ending with a newline character (U+000A). The signatures
/// MUST be cosignatures from the witness key(s) on the checkpoint. [...] The cosignature MUST
/// NOT omit the timestamp, i.e. the timestamp MUST NOT be zero." And "If all the checks above
/// pass, the witness MUST update its record of the latest cosigned checkpoint".
#[tokio::test]
async fn status_200_returns_cosignature_lines_and_records_the_checkpoint() {
    let s = Setup::start().await;
    let (status, _, body) = s.post(s.request(0, 5)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with('\u{2014}') && body.ends_with('\n'),
        "{body:?}"
    );
    for (old, size) in [(5, 13), (13, 13), (13, 32)] {
        let (status, _, body) = s.post(s.request(old, size)).await;
        assert_eq!(status, 200, "{old} -> {size}: {body}");
        let mut note = SignedNote::parse(&s.checkpoint(size)).unwrap();
        let lines = SignedNote::parse(format!("x\n\n{body}").as_bytes()).unwrap();
        for l in lines.signatures {
            note.add_signature(l);
        }
        let t = note.verify_cosignature(s.witness.verifier_key()).unwrap();
        assert!(t > 1_600_000_000, "a real, non-zero timestamp: {t}");
        assert_eq!(s.held().await, Some(size));
    }
}

/// "The request body MUST be a sequence of an old size line, zero or more consistency proof
/// lines, and an empty line, followed by a checkpoint." And "The old size MUST be equal to or
/// lower than the checkpoint size. Otherwise, the witness MUST respond with a "400 Bad
/// Request" HTTP status code."
#[tokio::test]
async fn status_400_for_a_malformed_body_or_an_old_size_above_the_checkpoint() {
    let s = Setup::start().await;
    s.hold_5().await;
    let good = String::from_utf8(s.request(5, 9)).unwrap();
    let cp = String::from_utf8(s.checkpoint(9)).unwrap();
    let proof = merkle::consistency_proof(&s.tree, 5, 9).unwrap();
    let too_many = (0..64)
        .map(|_| format!("{}\n", fedledger_ledger::note::b64_encode(&proof[0])))
        .collect::<String>();
    for (what, body) in [
        ("no old line", cp.clone()),
        ("leading zero", good.replacen("old 5", "old 05", 1)),
        ("not a number", good.replacen("old 5", "old five", 1)),
        ("no empty line", good.replacen("\n\n", "\n", 1)),
        (
            "a proof line that is not base64",
            good.replacen("old 5\n", "old 5\n!!!\n", 1),
        ),
        (
            "a proof line of 31 bytes",
            format!(
                "old 5\n{}\n\n{cp}",
                fedledger_ledger::note::b64_encode(&[0; 31])
            ),
        ),
        ("64 proof lines", format!("old 5\n{too_many}\n{cp}")),
        ("no checkpoint", "old 5\n\n".into()),
        ("a checkpoint that is not a note", "old 5\n\nhello\n".into()),
    ] {
        let (status, _, body) = s.post(body.into_bytes()).await;
        assert_eq!(status, 400, "{what}: {body}");
    }
    let (status, _, body) = s.post(s.request(0, 5).into_iter().collect()).await;
    assert_eq!(status, 409, "sanity: {body}");
    // Old size 9 above a checkpoint of size 5.
    let body = AddCheckpoint {
        old_size: 9,
        proof: Vec::new(),
        checkpoint: s.checkpoint(5),
    }
    .encode();
    let (status, _, text) = s.post(body).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("exceeds"), "{text}");
    assert_eq!(s.held().await, Some(5), "nothing changed");
}

/// "The witness MUST respond with a "403 Forbidden" HTTP status code if either no signature
/// from a trusted key for the origin is present, or a signature line's key name and ID match a
/// trusted key but the signature itself fails to verify." And "it MUST ignore signatures from
/// unknown keys".
#[tokio::test]
async fn status_403_without_a_valid_signature_by_the_log_key() {
    let s = Setup::start().await;
    s.hold_5().await;
    let stranger = NoteSigner::log(ORIGIN, key(9)).unwrap();
    let text = Checkpoint::new(ORIGIN, 9, s.tree.root_at(9).unwrap()).text();
    let only_stranger = stranger.sign_note(&text).encode().into_bytes();
    let proof = merkle::consistency_proof(&s.tree, 5, 9).unwrap();
    let req = |cp: Vec<u8>| {
        AddCheckpoint {
            old_size: 5,
            proof: proof.clone(),
            checkpoint: cp,
        }
        .encode()
    };
    let (status, _, body) = s.post(req(only_stranger)).await;
    assert_eq!(status, 403, "{body}");
    // The log's name and key id over a signature that does not verify.
    let mut forged = s.log.sign_note(&text);
    forged.signatures[0].payload[0] ^= 1;
    let (status, _, body) = s.post(req(forged.encode().into_bytes())).await;
    assert_eq!(status, 403, "{body}");
    // A stranger's line beside the log's is ignored: cosigned.
    let mut both = s.log.sign_note(&text);
    both.signatures.insert(0, stranger.sign_text(&text));
    let (status, _, body) = s.post(req(both.encode().into_bytes())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.held().await, Some(9));
}

/// "If the checkpoint origin is unknown, the witness MUST respond with a "404 Not Found" HTTP
/// status code." And for monitoring: "If the witness has never cosigned a checkpoint for that
/// log, it MUST respond with a "404 Not Found" HTTP status code instead."
#[tokio::test]
async fn status_404_for_an_unknown_origin_and_an_uncosigned_log() {
    let s = Setup::start().await;
    assert_eq!(s.held().await, None, "nothing cosigned yet: 404");
    let other = NoteSigner::log("other.example/log", key(1)).unwrap();
    let cp = SignedCheckpoint::sign(
        Checkpoint::new("other.example/log", 5, s.tree.root_at(5).unwrap()),
        &other,
    );
    let body = AddCheckpoint {
        old_size: 0,
        proof: Vec::new(),
        checkpoint: cp.encode().into_bytes(),
    }
    .encode();
    let (status, _, text) = s.post(body).await;
    assert_eq!(status, 404, "{text}");
    let c = WitnessClient::new(&s.server.url()).unwrap();
    assert_eq!(c.latest("other.example/log").await.unwrap(), None);
}

/// "The witness MUST check that the old size matches the size of the latest checkpoint it
/// cosigned for the checkpoint's origin (or zero if it never cosigned a checkpoint for that
/// origin). If it doesn't match, the witness MUST respond with a "409 Conflict" HTTP status
/// code. The response body MUST consist of the tree size of the latest cosigned checkpoint in
/// decimal, followed by a newline (U+000A). The response MUST have a Content-Type of
/// text/x.tlog.size."
#[tokio::test]
async fn status_409_names_the_size_held_as_text_x_tlog_size() {
    let s = Setup::start().await;
    // Never cosigned: the size held is zero.
    let (status, ct, body) = s.post(s.request(3, 9)).await;
    assert_eq!(
        (status, ct.as_str(), body.as_str()),
        (409, "text/x.tlog.size", "0\n")
    );
    s.hold_5().await;
    for old in [0, 3, 9] {
        let (status, ct, body) = s.post(s.request(old, 13)).await;
        assert_eq!(
            (status, ct.as_str(), body.as_str()),
            (409, "text/x.tlog.size", "5\n"),
            "old {old}"
        );
    }
    // The client reads it and retries from there.
    let c = WitnessClient::new(&s.server.url()).unwrap();
    let req = AddCheckpoint {
        old_size: 0,
        proof: Vec::new(),
        checkpoint: s.checkpoint(13),
    };
    assert_eq!(
        c.add_checkpoint(&req).await.unwrap(),
        Submitted::Conflict(5)
    );
    assert_eq!(s.held().await, Some(5));
}

/// The four 422 cases, each from its sentence of the spec. A refusal cosigns nothing and
/// changes nothing.
#[tokio::test]
async fn status_422_for_every_inconsistency_the_spec_names() {
    let s = Setup::start().await;
    // "A checkpoint of size zero MUST have the root hash of the empty tree, which RFC 6962,
    // Section 2.1 defines as the hash of the empty string. Otherwise, the witness MUST respond
    // with a "422 Unprocessable Entity" HTTP status code."
    let zero = SignedCheckpoint::sign(
        Checkpoint::new(ORIGIN, 0, merkle::leaf_hash(b"not empty")),
        &s.log,
    );
    let body = AddCheckpoint {
        old_size: 0,
        proof: Vec::new(),
        checkpoint: zero.encode().into_bytes(),
    }
    .encode();
    let (status, _, text) = s.post(body).await;
    assert_eq!(status, 422, "size 0, wrong root: {text}");
    assert_eq!(s.held().await, None);
    // The empty tree's root at size 0 is fine.
    let empty = SignedCheckpoint::sign(Checkpoint::new(ORIGIN, 0, merkle::empty_root()), &s.log);
    let body = AddCheckpoint {
        old_size: 0,
        proof: Vec::new(),
        checkpoint: empty.encode().into_bytes(),
    }
    .encode();
    assert_eq!(s.post(body).await.0, 200);

    // "If the proof is not empty when the old size is zero, or if a Merkle Consistency Proof
    // doesn't verify, the witness MUST respond with a "422 Unprocessable Entity" HTTP status
    // code."
    let body = AddCheckpoint {
        old_size: 0,
        proof: vec![[7; 32]],
        checkpoint: s.checkpoint(5),
    }
    .encode();
    let (status, _, text) = s.post(body).await;
    assert_eq!(status, 422, "a proof from size 0: {text}");
    assert_eq!(s.held().await, Some(0));
    s.hold_5().await;
    let mut proof = merkle::consistency_proof(&s.tree, 5, 9).unwrap();
    proof[0][0] ^= 1;
    let body = AddCheckpoint {
        old_size: 5,
        proof,
        checkpoint: s.checkpoint(9),
    }
    .encode();
    let (status, _, text) = s.post(body).await;
    assert_eq!(status, 422, "a proof that does not verify: {text}");
    // A fork: a validly signed checkpoint of another tree, with that tree's own proof.
    let fork = MemoryTree::from_entries((0..40u8).map(|i| vec![i ^ 0x80]));
    let forked =
        SignedCheckpoint::sign(Checkpoint::new(ORIGIN, 9, fork.root_at(9).unwrap()), &s.log);
    let body = AddCheckpoint {
        old_size: 5,
        proof: merkle::consistency_proof(&fork, 5, 9).unwrap(),
        checkpoint: forked.encode().into_bytes(),
    }
    .encode();
    let (status, _, text) = s.post(body).await;
    assert_eq!(status, 422, "a fork: {text}");

    // "If the old size matches the checkpoint size, the witness MUST check that the root
    // hashes are also identical. If they don't match, the witness MUST respond with a "422
    // Unprocessable Entity" HTTP status code."
    let other5 =
        SignedCheckpoint::sign(Checkpoint::new(ORIGIN, 5, fork.root_at(5).unwrap()), &s.log);
    let body = AddCheckpoint {
        old_size: 5,
        proof: Vec::new(),
        checkpoint: other5.encode().into_bytes(),
    }
    .encode();
    let (status, _, text) = s.post(body).await;
    assert_eq!(status, 422, "two roots for size 5: {text}");
    assert_eq!(s.held().await, Some(5), "no refusal changed the state");
}

/// "GET <monitoring prefix>/<origin hash>/checkpoint [...] The response body MUST be a
/// checkpoint for the log identified by the origin, and it MUST include the cosignature(s)
/// from the witness's key(s) that were returned from add-checkpoint and the cosignature from
/// the log key(s) that the witness verified."
#[tokio::test]
async fn the_monitoring_endpoint_serves_the_checkpoint_with_both_signatures() {
    let s = Setup::start().await;
    let (status, _, returned) = s.post(s.request(0, 7)).await;
    assert_eq!(status, 200);
    let c = WitnessClient::new(&s.server.url()).unwrap();
    let note = c.latest(ORIGIN).await.unwrap().unwrap();
    let cp = SignedCheckpoint::open(&note, s.log.verifier_key()).unwrap();
    assert_eq!(cp.checkpoint.size, 7);
    cp.note
        .verify_cosignature(s.witness.verifier_key())
        .unwrap();
    assert!(
        String::from_utf8(note).unwrap().ends_with(&returned),
        "the very cosignature add-checkpoint returned"
    );
}

/// Not in the spec, ours: a body over 64 KiB is refused before it is read (413), and other
/// methods are refused (405).
#[tokio::test]
async fn oversized_bodies_and_other_methods_are_refused() {
    let s = Setup::start().await;
    let (status, _, _) = s.post(vec![b'a'; 65 * 1024]).await;
    assert_eq!(status, 413);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::get(format!("{}add-checkpoint", s.server.url()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status().as_u16(), 405);
    assert_eq!(s.held().await, None);
}
