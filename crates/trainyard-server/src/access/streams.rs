//! A cap on the event streams and WebSocket sessions one key (or the keyless local user) holds
//! open at once, so one client cannot pin every connection and subscriber of the server.

use crate::access::Caller;
use crate::error::ApiError;
use crate::state::SharedState;

/// Held for as long as a stream is open; dropping it frees the slot.
pub struct StreamPermit {
    state: SharedState,
    holder: String,
}

impl std::fmt::Debug for StreamPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamPermit({})", self.holder)
    }
}

/// Takes one of the caller's stream slots, or answers 429 when they are all in use.
pub fn open_stream(state: &SharedState, caller: &Caller) -> Result<StreamPermit, ApiError> {
    let holder = caller.key_id.clone().unwrap_or_else(|| "local".into());
    let limit = state.config.max_streams_per_key;
    let mut open = state.access.streams.lock().unwrap();
    let count = open.entry(holder.clone()).or_default();
    if *count >= limit {
        return Err(ApiError::too_many_requests(format!(
            "this key already holds {limit} open streams (--max-streams-per-key); close one first"
        )));
    }
    *count += 1;
    Ok(StreamPermit {
        state: state.clone(),
        holder,
    })
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.state.access.streams.lock().unwrap();
        if let Some(count) = open.get_mut(&self.holder) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.holder);
            }
        }
    }
}
