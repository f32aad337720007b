//! A sender of invalid signatures and malformed bytes: alongside its honest
//! messages it sends tampered copies — flipped signature bits, truncations,
//! trailing bytes, unknown tags, wrong signers — and random noise.

use super::{Behaviour, Ctx};
use crate::{Message, Output, ValidatorIndex};

pub struct Garbage;

impl Behaviour for Garbage {
    fn name(&self) -> &'static str {
        "garbage"
    }

    fn on_outputs(&mut self, ctx: &mut Ctx, outputs: Vec<Output>) -> Vec<Output> {
        for o in &outputs {
            let Output::Broadcast(m) = o else { continue };
            let mut bytes = m.encode();
            let tampered = match ctx.rng.range(0, 6) {
                0 => {
                    let i = bytes.len() - 1 - ctx.rng.range(0, 63) as usize;
                    bytes[i] ^= 1 << ctx.rng.range(0, 7);
                    bytes
                }
                1 => {
                    bytes.truncate(ctx.rng.range(0, bytes.len() as u64 - 1) as usize);
                    bytes
                }
                2 => {
                    bytes.push(ctx.rng.u64() as u8);
                    bytes
                }
                3 => {
                    bytes[0] = ctx.rng.range(10, 255) as u8;
                    bytes
                }
                4 => match m.clone() {
                    Message::Vote(mut v) => {
                        v.signer = ValidatorIndex((v.signer.0 + 1) % ctx.validators.len() as u32);
                        Message::Vote(v).encode()
                    }
                    other => other.encode(),
                },
                5 => {
                    let i = ctx.rng.range(0, bytes.len() as u64 - 1) as usize;
                    bytes[i] = ctx.rng.u64() as u8;
                    bytes
                }
                _ => {
                    let n = ctx.rng.range(0, 200) as usize;
                    ctx.rng.bytes(n)
                }
            };
            ctx.raw.push((None, tampered));
        }
        outputs
    }
}
