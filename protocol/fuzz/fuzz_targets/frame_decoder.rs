//! Feeds arbitrary bytes to the frame decoder as a stream of frames.
//!
//! Checks, besides "no panic, no abort": a decoder never reports using more bytes than it
//! was given or a frame over its limit, and whatever decodes re-encodes to a frame that
//! decodes to the same value.
#![no_main]

use cortex_protocol::{BatchWriter, Frame, FrameDecoder, encode};
use libfuzzer_sys::fuzz_target;

fn reencode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    match frame {
        Frame::Single(env) => encode(env, &mut out).expect("a decoded envelope re-encodes"),
        Frame::Batch(envs) => {
            let mut w = BatchWriter::new();
            for env in envs {
                w.push(env).expect("a decoded batch entry re-encodes");
            }
            w.finish(&mut out).expect("a decoded batch re-encodes");
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks a limit, so small limits get exercised too.
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let decoder = match pick % 3 {
        0 => FrameDecoder::default(),
        1 => FrameDecoder::new(64),
        _ => FrameDecoder::new(4096),
    };
    while let Ok(Some((frame, used))) = decoder.decode(rest) {
        assert!(used <= rest.len() && used - 4 <= decoder.max_frame());
        let again = reencode(&frame);
        let (back, _) = FrameDecoder::default()
            .decode(&again)
            .expect("a re-encoded frame decodes")
            .expect("a re-encoded frame is complete");
        assert_eq!(back, frame);
        rest = &rest[used..];
    }
});
