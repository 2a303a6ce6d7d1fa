//! The pattern ids mphang names: one typed list, written as snake_case strings in reports.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! pattern_ids {
    ($($(#[$doc:meta])* $variant:ident = $id:literal,)*) => {
        /// A stable pattern id (`join_before_drain`); `deadlock`/`stuck` when no pattern fits.
        /// Each named id has a detector and a page `docs/patterns/<id>.md`; the two generic
        /// ones have neither.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            JsonSchema,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum PatternId {
            $($(#[$doc])* $variant,)*
        }

        impl PatternId {
            /// Every id, in declaration order.
            pub const ALL: &'static [PatternId] = &[$(PatternId::$variant,)*];

            /// The id as written in reports and docs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(PatternId::$variant => $id,)*
                }
            }
        }
    };
}

pattern_ids! {
    GilHeldWhileBlocked = "gil_held_while_blocked",
    LockOrderCycle = "lock_order_cycle",
    ForkInheritedLock = "fork_inherited_lock",
    OrphanedLock = "orphaned_lock",
    ReimportedMainBlocks = "reimported_main_blocks",
    JoinBeforeDrain = "join_before_drain",
    UndrainedQueueAtExit = "undrained_queue_at_exit",
    PoolResultHandlerDied = "pool_result_handler_died",
    PoolWorkerDied = "pool_worker_died",
    ThreadBlocksExit = "thread_blocks_exit",
    FinalizerDeadlock = "finalizer_deadlock",
    PipeSelfEof = "pipe_self_eof",
    StoreKeyNeverSet = "store_key_never_set",
    IpcCycle = "ipc_cycle",
    PeerExited = "peer_exited",
    TcpPeerClosed = "tcp_peer_closed",
    NoLiveWriter = "no_live_writer",
    BusyLoop = "busy_loop",
    /// A cycle of waits no named pattern explains.
    Deadlock = "deadlock",
    /// A dead end no named pattern explains.
    Stuck = "stuck",
}

impl PatternId {
    /// The two ids of what no named pattern explains.
    pub fn is_generic(self) -> bool {
        matches!(self, PatternId::Deadlock | PatternId::Stuck)
    }
}

impl std::fmt::Display for PatternId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for PatternId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for PatternId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_their_names() {
        for id in PatternId::ALL {
            let json = serde_json::to_string(id).expect("json");
            assert_eq!(json, format!("\"{}\"", id.as_str()));
            let back: PatternId = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, *id);
        }
        assert_eq!(PatternId::ALL.len(), 20);
    }
}
