//! Our tlog-tiles writer against tiles written by an outside implementation (tlog-scales
//! 0.0.3's `TilesWriter`, copied under `tests/data/tiles/`; see its README.md): the eight
//! entries of `cosigned_checkpoint/entries.jsonl` committed at sizes 5 and 8, and a
//! 70,000-entry log committed at 1000, 65536 and 70000 whose files are listed by SHA-256.

use std::path::{Path, PathBuf};

use fedledger_ledger::LedgerError;
use fedledger_ledger::export::write_tiles;
use fedledger_ledger::merkle::{Hash, MemoryTree, SubtreeSource, sha256_bytes};
use fedledger_ledger::tiles::TileSource;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Raw entries and their tree: what the tile writer reads.
struct Raw {
    tree: MemoryTree,
    entries: Vec<Vec<u8>>,
}

impl Raw {
    fn new(entries: Vec<Vec<u8>>) -> Self {
        Self {
            tree: MemoryTree::from_entries(&entries),
            entries,
        }
    }
}

impl SubtreeSource for Raw {
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        self.tree.perfect(level, index)
    }
}

impl TileSource for Raw {
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        Ok(self.entries[start as usize..end as usize].to_vec())
    }
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(
                    p.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_eight_entry_log_matches_the_outside_tiles_byte_for_byte() {
    let jsonl = std::fs::read(data().join("cosigned_checkpoint/entries.jsonl")).unwrap();
    let entries: Vec<Vec<u8>> = jsonl
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(entries.len(), 8);
    let out = tempfile::tempdir().unwrap();
    let summary = write_tiles(&Raw::new(entries), &[5, 8], None, out.path()).unwrap();
    let reference = data().join("tiles/log-8");
    let expected: Vec<String> = files(&reference.join("tile"))
        .into_iter()
        .map(|f| format!("tile/{f}"))
        .collect();
    assert_eq!(files(out.path()), expected);
    assert_eq!(summary.files, expected.len());
    for f in &expected {
        assert_eq!(
            std::fs::read(out.path().join(f)).unwrap(),
            std::fs::read(reference.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn the_70000_entry_log_writes_every_listed_file_with_equal_bytes() {
    let entries: Vec<Vec<u8>> = (0..70_000)
        .map(|i| format!("fedledger tiles reference entry {i}\n").into_bytes())
        .collect();
    let raw = Raw::new(entries);
    let root = fedledger_ledger::merkle::root(&raw.tree, 70_000).unwrap();
    assert_eq!(
        fedledger_ledger::note::b64_encode(&root),
        "WghAxXssdMlUz+mFhLJbd3Y3I43YLPs3FtYEdWouxdU="
    );
    let out = tempfile::tempdir().unwrap();
    write_tiles(&raw, &[1000, 65536, 70000], None, out.path()).unwrap();
    let listing = std::fs::read_to_string(data().join("tiles/log-70000.sha256")).unwrap();
    let mut checked = 0;
    for line in listing.lines() {
        let (sha, path) = line.split_once(' ').unwrap();
        let path = path.trim_start_matches([' ', '*']);
        let bytes = std::fs::read(out.path().join(path))
            .unwrap_or_else(|e| panic!("{path} was not written: {e}"));
        assert_eq!(hex::encode(sha256_bytes(&bytes)), sha, "{path}");
        checked += 1;
    }
    assert_eq!(checked, 551);
    // What we write beyond the listing are partials of the earlier checkpoints only.
    let listed: std::collections::BTreeSet<String> = listing
        .lines()
        .map(|l| {
            l.split_once(' ')
                .unwrap()
                .1
                .trim_start_matches([' ', '*'])
                .to_owned()
        })
        .collect();
    let extra: Vec<String> = files(out.path())
        .into_iter()
        .filter(|f| !listed.contains(f))
        .collect();
    assert_eq!(
        extra,
        [
            "tile/0/003.p/232",
            "tile/1/000.p/3",
            "tile/entries/003.p/232"
        ]
    );
}

mod served {
    //! The same log served over HTTP: the specification's content types and caching, the
    //! resources a tree size implies and nothing else, and proofs computed back from the tiles
    //! a client fetches.

    use fedledger_ledger::http::{TilesClient, serve_tiles};
    use fedledger_ledger::note::NoteSigner;
    use fedledger_ledger::tiles::{self, TileCache, TileId};
    use fedledger_ledger::{Log, merkle};
    use ring::signature::Ed25519KeyPair;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A log of `n` raw entries (the store validates records, so they are v2 records: the
    /// genesis and enrolments).
    fn log(dir: &std::path::Path, n: u64) -> Log {
        let signer = NoteSigner::log(
            "tiles-test",
            Ed25519KeyPair::from_seed_unchecked(&[3; 32]).unwrap(),
        )
        .unwrap();
        let log = Log::open(dir, "tiles-test", signer).unwrap();
        let mut entries = vec![format!(
            "{{\"created_at\":\"2026-12-01T00:00:00Z\",\"enrolments\":{},\"federation\":\"tiles-test\",\"governance\":{{\"governors\":[],\"threshold\":0}},\"model\":{{\"classes\":2,\"features\":3,\"hidden\":[],\"kind\":\"logreg\",\"params\":4}},\"privacy\":{{\"accountants\":[\"rdp\"],\"clip_norm\":\"0\",\"delta\":\"0.00001\",\"epsilon_budget\":\"8\",\"noise_multiplier\":\"0\"}},\"reward\":{{\"pool_per_round\":1000,\"rule\":\"shapley-proportional/v1\"}},\"training\":{{\"aggregation\":\"fedavg\",\"batch_size\":16,\"learning_rate\":\"0.1\",\"local_epochs\":1,\"quorum\":1,\"rounds\":3}},\"type\":\"fedledger.federation/v2\",\"v\":2,\"validation\":{{\"sha256\":\"{}\"}},\"witnesses\":{{\"keys\":[],\"quorum\":0}}}}",
            n - 1,
            "cc".repeat(32)
        )
        .into_bytes()];
        for i in 1..n {
            entries.push(
                format!(
                    "{{\"federation\":\"tiles-test\",\"name\":\"h{i}\",\"participant\":\"{:064x}\",\"role\":\"contributor\",\"type\":\"fedledger.enrolment/v2\",\"v\":2}}",
                    i
                )
                .into_bytes(),
            );
        }
        log.append_and_checkpoint(&entries[..300]).unwrap();
        log.append_and_checkpoint(&entries[300..]).unwrap();
        log
    }

    /// One raw HTTP/1.1 exchange: status line, headers (lower-cased names), body.
    async fn exchange(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
    ) -> (String, Vec<(String, String)>, Vec<u8>) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("{method} /{path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().to_owned();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        (status, headers, raw[split + 4..].to_vec())
    }

    fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_api_answers_with_the_specifications_content_types_and_caching() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path(), 600);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = serve_tiles(l, log.clone()).await.unwrap();
        let addr = server.local_addr();

        let (status, h, body) = exchange(addr, "GET", "checkpoint").await;
        assert!(status.ends_with("200 OK"), "{status}");
        assert_eq!(
            header(&h, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(header(&h, "cache-control"), Some("no-cache"));
        assert_eq!(
            body,
            log.latest_checkpoint()
                .unwrap()
                .unwrap()
                .encode()
                .into_bytes()
        );

        for path in [
            "tile/0/000",
            "tile/0/001",
            "tile/0/002.p/88",
            "tile/1/000.p/2",
            "tile/entries/000",
            "tile/entries/002.p/88",
            // A partial of the earlier checkpoint (size 300) is served too.
            "tile/0/001.p/44",
        ] {
            let (status, h, body) = exchange(addr, "GET", path).await;
            assert!(status.ends_with("200 OK"), "{path}: {status}");
            assert_eq!(
                header(&h, "content-type"),
                Some("application/octet-stream"),
                "{path}"
            );
            assert_eq!(
                header(&h, "cache-control"),
                Some("public, max-age=31536000, immutable"),
                "{path}"
            );
            let id = TileId::parse(path).unwrap();
            assert_eq!(body, tiles::read_tile(&log, id).unwrap(), "{path}");
            assert_eq!(
                header(&h, "content-length"),
                Some(body.len().to_string().as_str())
            );
        }
        // HEAD: the headers without the body.
        let (status, h, body) = exchange(addr, "HEAD", "tile/0/000").await;
        assert!(status.ends_with("200 OK"));
        assert_eq!(header(&h, "content-length"), Some("8192"));
        assert!(body.is_empty());
        // What the tree does not imply, or is not a resource, is not found.
        for path in [
            "tile/0/003",
            "tile/0/002",
            "tile/0/002.p/89",
            "tile/1/000",
            "tile/entries/003.p/1",
            "tile/0/0",
            "tile/0/x000/001",
            "",
            "entries",
        ] {
            let (status, _, _) = exchange(addr, "GET", path).await;
            assert!(status.ends_with("404 Not Found"), "{path}: {status}");
        }
        let (status, h, _) = exchange(addr, "POST", "checkpoint").await;
        assert!(status.ends_with("405 Method Not Allowed"), "{status}");
        assert_eq!(header(&h, "allow"), Some("GET, HEAD"));
        assert!(server.served() >= 9);
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_proves_inclusion_and_consistency_from_served_tiles() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path(), 600);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = serve_tiles(l, log.clone()).await.unwrap();
        let client = TilesClient::new(&server.url()).unwrap();
        let note = client.checkpoint().await.unwrap().unwrap();
        let cp = fedledger_ledger::note::SignedCheckpoint::open(&note, log.log_key()).unwrap();
        assert_eq!(cp.checkpoint.size, 600);
        let mut cache = TileCache::new(600);
        client
            .fill(&mut cache, &[0, 255, 256, 599], Some(300))
            .await
            .unwrap();
        for i in [0u64, 255, 256, 599] {
            let proof = cache.inclusion_proof(i).unwrap();
            assert_eq!(proof, log.inclusion_proof(i, 600).unwrap());
            merkle::verify_inclusion(
                &merkle::leaf_hash(cache.entry(i).unwrap()),
                i,
                600,
                &proof,
                &cp.checkpoint.root,
            )
            .unwrap();
        }
        assert_eq!(
            cache.consistency_proof(300).unwrap(),
            log.consistency_proof(300, 600).unwrap()
        );
        let stats = client.stats();
        assert!(stats.requests >= 4 && stats.bytes > 8192, "{stats:?}");
        server.shutdown().await;
    }
}
