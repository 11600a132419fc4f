//! Generates the annotated hex examples in SPEC.md and checks that the document holds
//! exactly them. Every example is assembled field by field, each field encoded on its own,
//! and the concatenation is asserted equal to what `encode` / `BatchWriter` produce, so the
//! annotations cannot drift from the bytes. Regenerate with
//! `CORTEX_BLESS=1 cargo test -p cortex-protocol --test spec_examples`.

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;

use common::*;
use cortex_protocol::*;
use serde::Serialize;

/// Annotated bytes: one row per field.
#[derive(Default)]
struct Dump {
    rows: Vec<(Vec<u8>, String)>,
}

impl Dump {
    fn raw(&mut self, bytes: &[u8], note: impl Into<String>) {
        self.rows.push((bytes.to_vec(), note.into()));
    }
    /// A field encoded exactly as it is inside a body.
    fn field<T: Serialize>(&mut self, value: &T, note: impl Into<String>) {
        self.raw(&encode_payload(value).unwrap(), note);
    }
    fn bytes(&self) -> Vec<u8> {
        self.rows.iter().flat_map(|(b, _)| b.clone()).collect()
    }
    fn render(&self) -> String {
        const PER_LINE: usize = 12;
        let mut out = String::new();
        for (bytes, note) in &self.rows {
            let mut chunks = bytes.chunks(PER_LINE).peekable();
            let mut first = true;
            while let Some(chunk) = chunks.next() {
                let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                let hex = hex.join(" ");
                let note = if first { note.as_str() } else { "" };
                let line = format!("{hex:<36}  {note}");
                writeln!(out, "{}", line.trim_end()).unwrap();
                first = false;
                if chunks.peek().is_none() {
                    break;
                }
            }
        }
        out
    }
}

/// How the varint for `v` is laid out.
fn varint(v: u64) -> &'static str {
    match v {
        0..=250 => "varint, 1 byte",
        251..=0xffff => "varint: 0xfb + u16 LE",
        0x1_0000..=0xffff_ffff => "varint: 0xfc + u32 LE",
        _ => "varint: 0xfd + u64 LE",
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn header(d: &mut Dump, len: usize, kind: u8, name: &str) {
    d.raw(
        &u32::try_from(len).unwrap().to_be_bytes(),
        format!("length = {len} (u32 big-endian: version + kind + body)"),
    );
    d.raw(&[CURRENT_VERSION], format!("version = {CURRENT_VERSION}"));
    d.raw(&[kind], format!("kind = 0x{kind:02x} {name}"));
}

fn node_fields(d: &mut Dump, path: &str, n: &NodeId) {
    d.field(
        &n.name(),
        format!("{path}.name = {} (varint length, UTF-8)", quoted(n.name())),
    );
    d.field(
        &n.incarnation(),
        format!(
            "{path}.incarnation = {} ({})",
            n.incarnation(),
            varint(n.incarnation())
        ),
    );
}

fn meta_fields(d: &mut Dump, path: &str, m: &RequestMeta) {
    d.field(
        &m.budget_us,
        format!(
            "{path}.budget_us = {} ({})",
            m.budget_us,
            varint(m.budget_us)
        ),
    );
    match &m.trace.parent {
        None => d.raw(&[0], format!("{path}.trace.parent = None")),
        Some(p) => {
            d.raw(&[1], format!("{path}.trace.parent = Some"));
            d.raw(&p.trace_id, "  trace_id (16 raw bytes)");
            d.raw(&p.span_id, "  span_id (8 raw bytes)");
            d.raw(&[p.flags], format!("  flags = {:#04x}", p.flags));
        }
    }
    d.field(
        &m.trace.tracestate,
        format!("{path}.trace.tracestate = {}", quoted(&m.trace.tracestate)),
    );
}

/// The body of a Tell, field by field.
fn tell_fields(d: &mut Dump, t: &Tell) {
    match &t.target {
        Target::Virtual(id) => {
            d.raw(&[0], "target = Target::Virtual (variant 0)");
            d.field(&id.kind(), format!("target.kind = {}", quoted(id.kind())));
            d.field(&id.key(), format!("target.key = {}", quoted(id.key())));
        }
        other => panic!("the examples use a virtual target, not {other:?}"),
    }
    d.field(
        &t.message,
        format!("message = {}", quoted(t.message.as_str())),
    );
    d.field(
        &t.payload,
        format!("payload = {} bytes (varint length, raw)", t.payload.len()),
    );
    meta_fields(d, "meta", &t.meta);
    d.field(
        &t.epoch,
        format!("epoch = {} ({})", t.epoch, varint(t.epoch)),
    );
}

fn hello_example() -> String {
    let h = sample_hello();
    let env = Envelope::Hello(h.clone());
    let frame = frame_of(&env);
    let mut d = Dump::default();
    header(&mut d, frame.len() - 4, kind::HELLO, "Hello");
    d.raw(
        &[h.versions.min],
        format!("versions.min = {} (u8, raw)", h.versions.min),
    );
    d.raw(
        &[h.versions.max],
        format!("versions.max = {} (u8, raw)", h.versions.max),
    );
    d.field(&h.cluster, format!("cluster = {}", quoted(&h.cluster)));
    let PeerIdentity::Node(n) = &h.identity else {
        panic!("the example dials as a node")
    };
    d.raw(&[0], "identity = PeerIdentity::Node (variant 0)");
    node_fields(&mut d, "identity.0", n);
    d.field(
        &h.features,
        format!(
            "features = {} (FEATURE_BATCH | FEATURE_TOPOLOGY)",
            h.features
        ),
    );
    d.raw(&[0], "token = None");
    assert_eq!(
        d.bytes(),
        frame,
        "hello annotation drifted from the encoding"
    );
    d.render()
}

fn welcome_example() -> String {
    let w = sample_welcome();
    let frame = frame_of(&Envelope::Welcome(w.clone()));
    let mut d = Dump::default();
    header(&mut d, frame.len() - 4, kind::WELCOME, "Welcome");
    d.raw(&[w.version], format!("version = {} (u8, raw)", w.version));
    node_fields(&mut d, "node", &w.node);
    d.field(
        &w.features,
        format!("features = {} (FEATURE_BATCH)", w.features),
    );
    assert_eq!(
        d.bytes(),
        frame,
        "welcome annotation drifted from the encoding"
    );
    d.render()
}

fn tell_example() -> String {
    let t = sample_tell();
    let frame = frame_of(&Envelope::Tell(t.clone()));
    let mut d = Dump::default();
    header(&mut d, frame.len() - 4, kind::TELL, "Tell");
    tell_fields(&mut d, &t);
    assert_eq!(
        d.bytes(),
        frame,
        "tell annotation drifted from the encoding"
    );
    d.render()
}

fn batch_example() -> String {
    let envs = sample_batch();
    let frame = batch_of(&envs);
    let mut d = Dump::default();
    header(&mut d, frame.len() - 4, kind::BATCH, "Batch");
    d.raw(
        &u32::try_from(envs.len()).unwrap().to_be_bytes(),
        format!("count = {} (u32 big-endian)", envs.len()),
    );
    for (i, env) in envs.iter().enumerate() {
        let entry_len = frame_of(env).len() - 5; // kind + body
        d.raw(
            &u32::try_from(entry_len).unwrap().to_be_bytes(),
            format!("entry {i}: length = {entry_len} (u32 big-endian: kind + body)"),
        );
        match env {
            Envelope::Tell(t) => {
                d.raw(&[kind::TELL], format!("entry {i}: kind = 0x10 Tell"));
                tell_fields(&mut d, t);
            }
            Envelope::Ping(p) => {
                d.raw(&[kind::PING], format!("entry {i}: kind = 0x04 Ping"));
                d.field(
                    &p.nonce,
                    format!("nonce = {} ({})", p.nonce, varint(p.nonce)),
                );
            }
            other => panic!("no annotation for {other:?}"),
        }
    }
    assert_eq!(
        d.bytes(),
        frame,
        "batch annotation drifted from the encoding"
    );
    d.render()
}

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("SPEC.md")
}

/// Replaces (or checks) the fenced block between the markers named `name`.
fn sync_block(spec: &mut String, name: &str, body: &str) -> Result<(), String> {
    let begin = format!("<!-- BEGIN GENERATED {name} -->\n");
    let end = format!("<!-- END GENERATED {name} -->");
    let a = spec
        .find(&begin)
        .ok_or_else(|| format!("SPEC.md lacks the marker {begin:?}"))?
        + begin.len();
    let b = a + spec[a..]
        .find(&end)
        .ok_or_else(|| format!("SPEC.md lacks the marker {end:?}"))?;
    let block = format!("```text\n{body}```\n");
    if spec[a..b] == block {
        return Ok(());
    }
    if blessing() {
        spec.replace_range(a..b, &block);
        return Ok(());
    }
    Err(format!(
        "SPEC.md's example {name} is stale; expected:\n{block}\nrun with CORTEX_BLESS=1 to update it"
    ))
}

#[test]
fn spec_examples_are_exact() {
    let mut spec = std::fs::read_to_string(spec_path()).unwrap();
    let examples = [
        ("hello", hello_example()),
        ("welcome", welcome_example()),
        ("tell", tell_example()),
        ("batch", batch_example()),
    ];
    let errors: Vec<String> = examples
        .iter()
        .filter_map(|(name, body)| sync_block(&mut spec, name, body).err())
        .collect();
    if blessing() {
        std::fs::write(spec_path(), &spec).unwrap();
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}

/// SPEC.md's table of error codes is the wire order.
#[test]
fn error_code_indices_are_stable() {
    for (i, code) in ALL_CODES.iter().enumerate() {
        assert_eq!(
            encode_payload(code).unwrap(),
            [u8::try_from(i).unwrap()],
            "{code:?}"
        );
    }
    let states = [
        MemberState::Up,
        MemberState::Suspect,
        MemberState::Down,
        MemberState::Left,
    ];
    for (i, s) in states.iter().enumerate() {
        assert_eq!(
            encode_payload(s).unwrap(),
            [u8::try_from(i).unwrap()],
            "{s:?}"
        );
    }
}
