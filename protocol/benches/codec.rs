//! Codec throughput: a Tell with a 64-byte payload, alone and in batches of 1,000, encoded
//! and decoded; plus a baseline measured in the same run: raw bincode on the same Tell with
//! no framing, validation or guard, so that ratios survive noisy machines.
//!
//! Each benchmark runs twice, once reporting envelopes/s and once bytes/s (criterion takes
//! one throughput per benchmark). Run:
//! `cargo bench -p cortex-protocol --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bincode::config;
use bytes::Bytes;
use cortex_protocol::{
    ActorId, BatchWriter, Envelope, FrameDecoder, MessageName, RequestMeta, Target, Tell,
    TraceContext, encode,
};
use criterion::{Criterion, Throughput, criterion_main};

const BATCH: usize = 1000;

fn tell() -> Tell {
    Tell {
        target: Target::Virtual(ActorId::new("order", "1234").unwrap()),
        message: MessageName::new("shop.Add").unwrap(),
        payload: Bytes::from(vec![0xab; 64]),
        meta: RequestMeta {
            budget_us: 5_000_000,
            trace: TraceContext::default(),
        },
        epoch: 300,
    }
}

fn batch_frame(env: &Envelope, out: &mut Vec<u8>) {
    let mut w = BatchWriter::new();
    for _ in 0..BATCH {
        w.push(env).unwrap();
    }
    w.finish(out).unwrap();
}

fn bench(c: &mut Criterion) {
    let t = tell();
    let env = Envelope::Tell(t.clone());
    let decoder = FrameDecoder::default();

    let mut single = Vec::new();
    encode(&env, &mut single).unwrap();
    let mut batch = Vec::new();
    batch_frame(&env, &mut batch);
    let raw = bincode::serde::encode_to_vec(&t, config::standard()).unwrap();
    assert_eq!(raw, single[6..], "the baseline must encode the same body");

    let units = [
        ("envelopes", 1, BATCH as u64),
        ("bytes", single.len() as u64, batch.len() as u64),
    ];
    for (unit, one, many) in units {
        let tp = |n| {
            if unit == "envelopes" {
                Throughput::Elements(n)
            } else {
                Throughput::Bytes(n)
            }
        };
        let mut g = c.benchmark_group(format!("codec_{unit}"));

        g.throughput(tp(one));
        let mut out = Vec::with_capacity(single.len());
        g.bench_function("tell_encode", |b| {
            b.iter(|| {
                out.clear();
                encode(black_box(&env), &mut out).unwrap();
            })
        });
        g.bench_function("tell_decode", |b| {
            b.iter(|| decoder.decode(black_box(&single)).unwrap().unwrap())
        });
        g.bench_function("baseline_raw_bincode_encode_to_vec", |b| {
            b.iter(|| bincode::serde::encode_to_vec(black_box(&t), config::standard()).unwrap())
        });
        g.bench_function("baseline_raw_bincode_decode_from_slice", |b| {
            b.iter(|| {
                let (v, _): (Tell, usize) =
                    bincode::serde::decode_from_slice(black_box(&raw), config::standard()).unwrap();
                v
            })
        });

        g.throughput(tp(many));
        let mut out = Vec::with_capacity(batch.len());
        g.bench_function("batch1000_encode", |b| {
            b.iter(|| {
                out.clear();
                batch_frame(black_box(&env), &mut out);
            })
        });
        g.bench_function("batch1000_decode", |b| {
            b.iter(|| decoder.decode(black_box(&batch)).unwrap().unwrap())
        });
        g.finish();
    }
}

// The macro generates an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);
