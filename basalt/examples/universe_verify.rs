//! Verifying a signed repository index of N packages (default 10,000), as a client does on
//! first contact (pinned root key, every role's signature, the index's length and sha256,
//! every package entry parsed and checked), against the machine's raw ed25519 verify and
//! sha256 throughput measured in the same run.
//!
//!   universe_verify [PACKAGES=10000] [RUNS=7]

#![allow(
    clippy::print_stdout,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    clippy::unwrap_used
)]

use basalt_universe::publish::{self, Expiry};
use basalt_universe::repo::{Fetcher, RepoSpec, parse_index};
use basalt_universe::tuf::{self, PublicKey};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn package_files(i: usize) -> BTreeMap<String, Vec<u8>> {
    // Shaped like a real Universe package: nested options with defaults, asJson, resource.
    let mut f = BTreeMap::new();
    f.insert(
        "package.json".into(),
        format!(
            r#"{{"packagingVersion":"4.0","name":"pkg-{i:05}","version":"1.{i}.0",
            "maintainer":"bench@example.org","description":"benchmark package {i}",
            "tags":["bench","t{}"],"preInstallNotes":"pre","postInstallNotes":"post"}}"#,
            i % 50
        )
        .into_bytes(),
    );
    f.insert(
        "config.json".into(),
        br#"{"type":"object","properties":{"service":{"type":"object","properties":{
        "name":{"type":"string","default":"svc"},"cpus":{"type":"number","minimum":0.01,"default":0.1},
        "mem":{"type":"integer","default":64},"env":{"type":"object","default":{}}},"required":["name"]}}}"#
            .to_vec(),
    );
    f.insert(
        "marathon.json.mustache".into(),
        br#"{"id":"/{{service.name}}","cpus":{{service.cpus}},"mem":{{service.mem}},
        "env":{{#asJson}}service.env{{/asJson}},"cmd":"run {{resource.assets.uris.bin}}"}"#
            .to_vec(),
    );
    f.insert(
        "resource.json".into(),
        format!(r#"{{"assets":{{"uris":{{"bin":"https://example.org/bin/{i}"}}}}}}"#).into_bytes(),
    );
    f
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(7);
    let dir = std::env::temp_dir().join(format!("basalt-universe-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (repo, keys) = (dir.join("repo"), dir.join("keys"));
    let now = SystemTime::now();

    let t = Instant::now();
    publish::init(&repo, &keys, 1, 1, Expiry::default(), now).unwrap();
    for i in 0..n {
        publish::add_files(&repo, package_files(i), Some(0), "bench").unwrap();
    }
    let signed = publish::sign_repo(&repo, &keys, Expiry::default(), now).unwrap();
    let build_s = t.elapsed().as_secs_f64();
    let index = std::fs::read(repo.join("repo.json")).unwrap();
    let targets = std::fs::read(repo.join("targets.json")).unwrap();
    println!(
        "repository: {} packages, index {:.1} MiB, targets.json {:.1} MiB (built and signed in {build_s:.1} s)",
        signed.packages,
        index.len() as f64 / 1048576.0,
        targets.len() as f64 / 1048576.0
    );

    let pin = PublicKey::from_json(&std::fs::read(keys.join("root-1.pub")).unwrap()).unwrap();
    let spec = RepoSpec {
        name: "bench".into(),
        uri: format!("file://{}/repo.json", repo.display()),
        allow_unsigned: false,
        root_key: Some(pin.clone()),
        trust: None,
    };
    let fetcher = Fetcher::new();
    let (mut full, mut meta, mut hash, mut parse) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let t = Instant::now();
        let loaded = spec.load(&fetcher, SystemTime::now()).await.unwrap();
        full.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(loaded.packages.len(), n);

        // The same work in its parts: metadata chain, index hash, index parse.
        let t = Instant::now();
        let root = std::fs::read(repo.join("1.root.json")).unwrap();
        let trust = tuf::Trust::from_pinned_key(&pin, &root, now).unwrap();
        let base = repo.clone();
        let v = tuf::refresh(&trust, now, 64 << 20, |name: &str, _max: u64| {
            let r = std::fs::read(base.join(name)).ok();
            std::future::ready(Ok(r))
        })
        .await
        .unwrap();
        meta.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        v.targets.verify("repo.json", &index).unwrap();
        hash.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let (p, _) = parse_index(&index, true).unwrap();
        parse.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(p.len(), n);
    }

    // The machine's raw primitives, same run.
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let msg = b"a timestamp.json body of about this size, signed by one ed25519 key......";
    let sig = key.sign(msg);
    let vk = key.verifying_key();
    let mut per_verify = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..1000 {
            vk.verify(msg, &sig).unwrap();
        }
        per_verify.push(t.elapsed().as_secs_f64() * 1e6 / 1000.0);
    }
    let mut sha_mbs = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        let d = Sha256::digest(&index);
        std::hint::black_box(d);
        sha_mbs.push(index.len() as f64 / 1048576.0 / t.elapsed().as_secs_f64());
    }
    let (verify_us, sha) = (median(per_verify), median(sha_mbs));
    // What verification cannot go below: the signatures of one root, timestamp, snapshot
    // and targets, and hashing the bytes the signatures cover (index + targets.json).
    let floor_ms =
        4.0 * verify_us / 1e3 + (index.len() + targets.len()) as f64 / 1048576.0 / sha * 1e3;
    let full_ms = median(full);
    println!("medians of {runs} runs:");
    println!("  full verification (first contact, file://): {full_ms:.1} ms");
    println!(
        "    metadata chain (root, timestamp, snapshot, targets): {:.1} ms",
        median(meta)
    );
    println!("    index sha256 + length: {:.1} ms", median(hash));
    println!(
        "    index parse + every package checked: {:.1} ms",
        median(parse)
    );
    println!("machine: ed25519 verify {verify_us:.1} us, sha256 {sha:.0} MiB/s");
    println!(
        "  floor (4 verifies + hashing index and targets.json): {floor_ms:.1} ms; full = {:.1}x floor",
        full_ms / floor_ms
    );
    let _ = std::fs::remove_dir_all(&dir);
}
