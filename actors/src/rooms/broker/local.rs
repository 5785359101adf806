//! The node-local broker: one node, offsets from the room's own state.

use serde_json::value::RawValue;

use super::{Broker, History, Position, Reply};

/// Offsets assigned on this node, at once, from the room as its hub knows
/// it; the hub's history ring is the only history. See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Broker for Local {
    fn shared(&self) -> bool {
        false
    }

    fn is_up(&self) -> bool {
        true
    }

    fn publish(
        &self,
        _room: &str,
        here: &Position,
        _user: &str,
        _data: &RawValue,
    ) -> Reply<Position> {
        Reply::Now(Ok(Position {
            epoch: here.epoch.clone(),
            offset: here.offset + 1,
        }))
    }

    fn head(&self, _room: &str, here: &Position) -> Reply<Position> {
        Reply::Now(Ok(here.clone()))
    }

    fn history(&self, _room: &str, _from: u64, _to: u64) -> Reply<Option<History>> {
        Reply::Now(Ok(None))
    }
}
