//! Criterion benches for the protocol hot paths: command parsing (with framing), reply
//! encoding, PORT/PASV text and directory listing formatting.
//!
//! `cargo bench -p ferroftp-proto -- --quick` for a short run; figures in docs/BENCHMARKS.md.

// `criterion_main!` writes the bench's `main` without a doc comment; nothing outside this
// bench can see it anyway.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferroftp_proto::framing::{DEFAULT_MAX_LINE, LineBuffer};
use ferroftp_proto::host_port::{format_pasv_text, parse_port_argument};
use ferroftp_proto::listing::{ListFormat, MlstFacts, format_entry};
use ferroftp_proto::{Command, DirEntry, FileKind, FileMeta, Reply, ReplyCode, Verb};

fn parse(c: &mut Criterion) {
    let long_path = format!(
        "RETR /{}/file.tar.gz",
        [
            "projects", "ferroftp", "releases", "2026", "november", "nightly"
        ]
        .repeat(4)
        .join("/")
    );
    let lines: [(&str, &[u8]); 4] = [
        ("USER", b"USER anonymous"),
        ("RETR long path", long_path.as_bytes()),
        ("PORT", b"PORT 127,0,0,1,117,48"),
        ("NOOP", b"NOOP"),
    ];
    let mut group = c.benchmark_group("parse");
    for (name, line) in lines {
        group.bench_function(name, |b| b.iter(|| Command::parse(black_box(line))));
    }

    // A line framed and parsed: what a session does per received command.
    group.bench_function("framed USER", |b| {
        let mut framer = LineBuffer::new(DEFAULT_MAX_LINE);
        b.iter(|| {
            framer.push(black_box(b"USER anonymous\r\n"));
            let line = framer.next_line().expect("line").expect("fits");
            Command::parse(&line)
        })
    });

    // An 8 KiB + 1 line (over the limit) arriving in 1 KiB reads, then a short command: the
    // framer refuses the long line and must still find the next one.
    let mut over_long = vec![b'A'; DEFAULT_MAX_LINE + 1];
    over_long.extend_from_slice(b"\r\nNOOP\r\n");
    group.throughput(Throughput::Bytes(over_long.len() as u64));
    group.bench_function("framed 8 KiB over-long line", |b| {
        let mut framer = LineBuffer::new(DEFAULT_MAX_LINE);
        b.iter(|| {
            let mut refused = 0;
            let mut parsed = 0;
            for chunk in black_box(&over_long).chunks(1024) {
                framer.push(chunk);
                while let Some(line) = framer.next_line() {
                    match line {
                        Ok(line) => {
                            if Command::parse(&line).is_ok() {
                                parsed += 1;
                            }
                        }
                        Err(_) => refused += 1,
                    }
                }
            }
            assert_eq!((refused, parsed), (1, 1));
        })
    });
    group.finish();
}

/// The FEAT reply a plain-text session sends (see `Session::features`).
fn feat_reply() -> Reply {
    let mut lines = vec!["Extensions supported:".to_owned()];
    lines.extend(
        Verb::ALL
            .iter()
            .filter_map(|verb| verb.spec().feature)
            .map(str::to_owned),
    );
    lines.push(MlstFacts::default().feature_line());
    lines.extend(["TVFS", "UTF8", "End"].map(str::to_owned));
    Reply::multiline(ReplyCode::SYSTEM_STATUS, lines)
}

fn replies(c: &mut Criterion) {
    let single = Reply::new(ReplyCode::FILE_ACTION_OK, "Directory successfully changed.");
    let feat = feat_reply();
    let mut group = c.benchmark_group("reply encode_into");
    let mut out = Vec::with_capacity(1024);
    group.bench_function("single line", |b| {
        b.iter(|| {
            out.clear();
            black_box(&single).encode_into(&mut out);
            black_box(out.len())
        })
    });
    group.bench_function(format!("FEAT ({} lines)", feat.lines.len()), |b| {
        b.iter(|| {
            out.clear();
            black_box(&feat).encode_into(&mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

fn host_port(c: &mut Criterion) {
    let addr = SocketAddrV4::new(Ipv4Addr::new(192, 168, 100, 200), 30_123);
    let mut group = c.benchmark_group("host_port");
    group.bench_function("format_pasv_text", |b| {
        b.iter(|| format_pasv_text(black_box(addr)))
    });
    group.bench_function("parse_port_argument", |b| {
        b.iter(|| parse_port_argument(black_box("192,168,100,200,117,171")))
    });
    group.finish();
}

const ENTRIES: usize = 10_000;

fn entries(now: SystemTime) -> Vec<DirEntry> {
    (0..ENTRIES)
        .map(|index| {
            let directory = index % 10 == 0;
            // Half recent (time of day), half older than six months (year).
            let age = if index % 2 == 0 { 3_600 } else { 400 * 86_400 } + index as u64;
            DirEntry {
                name: if directory {
                    format!("directory-{index:05}")
                } else {
                    format!("report-{index:05}.csv")
                },
                meta: FileMeta {
                    kind: if directory {
                        FileKind::Directory
                    } else {
                        FileKind::File
                    },
                    size: if directory {
                        4096
                    } else {
                        (index as u64) * 1_337
                    },
                    modified: Some(now - Duration::from_secs(age)),
                    mode: if directory { 0o755 } else { 0o644 },
                },
            }
        })
        .collect()
}

fn listing(c: &mut Criterion) {
    let now = UNIX_EPOCH + Duration::from_secs(1_764_084_918);
    let entries = entries(now);
    let facts = MlstFacts::default();
    let mut group = c.benchmark_group("listing 10k entries");
    group.throughput(Throughput::Elements(ENTRIES as u64));
    let mut out = Vec::with_capacity(ENTRIES * 128);
    for (name, format) in [
        ("LIST", ListFormat::Long),
        ("NLST", ListFormat::NamesOnly),
        ("MLSD", ListFormat::Machine),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for entry in &entries {
                    format_entry(format, black_box(entry), now, facts, true, &mut out);
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, replies, host_port, listing);
criterion_main!(benches);
