//! A validator that never says anything: it keeps its timers and state but sends nothing.

use super::{Behaviour, Ctx};
use crate::Output;

pub struct Silent;

impl Behaviour for Silent {
    fn name(&self) -> &'static str {
        "silent"
    }

    fn on_outputs(&mut self, _ctx: &mut Ctx, outputs: Vec<Output>) -> Vec<Output> {
        outputs.into_iter().filter(|o| !matches!(o, Output::Broadcast(_) | Output::Send { .. })).collect()
    }
}
