//! How many connections this process can hold, from its open-file limit.
//! Every socket is a descriptor, and so is every database file, media file,
//! ffmpeg pipe and outbound download: without a budget, a flood of sockets
//! takes the descriptors the rest of the server needs, and `accept` itself
//! fails. The arithmetic (docs/security.md, "Connections and limits"):
//!
//! ```text
//! open files L          RLIMIT_NOFILE (soft limit, raised to the hard one at start)
//! accepted connections  L - FILE_RESERVE - (ADMIN_CONNECTIONS if REELTIME_ADMIN_LISTEN)
//! waiting sockets       min(REELTIME_MAX_PENDING_AUTH,
//!                           accepted connections - REELTIME_FD_RESERVE,
//!                           ceil(REELTIME_MAX_CONNECTIONS / 2))
//! ```
//!
//! So waiting sockets can never take the last `REELTIME_FD_RESERVE` accepted
//! connections (kept for /healthz, /readyz and connects that carry their
//! token), nor more than half of `REELTIME_MAX_CONNECTIONS`, and no socket
//! can take the `FILE_RESERVE` descriptors the server's own files need.

/// Descriptors never used for connections: database, logs, media files,
/// ffmpeg pipes, downloads, JWKS and Redis connections.
pub const FILE_RESERVE: usize = 128;
/// Connections the admin listener may hold at once: a scraper and a probe
/// or two need no more, and the public flood cannot take them.
pub const ADMIN_CONNECTIONS: usize = 32;

/// The caps derived at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// RLIMIT_NOFILE as found.
    pub open_files: usize,
    /// Connections the public listener holds at once (any state, WebSockets
    /// included); the accept loop waits for one to close beyond this.
    pub connections: usize,
    /// Sockets waiting for their token, at most.
    pub waiting: usize,
}

/// What the budget is derived from.
#[derive(Debug, Clone, Copy)]
pub struct BudgetInputs {
    pub open_files: usize,
    pub fd_reserve: usize,
    pub max_pending_auth: usize,
    pub max_connections: Option<usize>,
    pub admin_listener: bool,
}

impl Budget {
    /// Applies the arithmetic above.
    pub fn derive(inputs: BudgetInputs) -> Budget {
        let admin = if inputs.admin_listener {
            ADMIN_CONNECTIONS
        } else {
            0
        };
        let connections = inputs
            .open_files
            .saturating_sub(FILE_RESERVE + admin)
            .max(1);
        let mut waiting = inputs
            .max_pending_auth
            .min(connections.saturating_sub(inputs.fd_reserve));
        if let Some(max) = inputs.max_connections {
            waiting = waiting.min(max.div_ceil(2));
        }
        Budget {
            open_files: inputs.open_files,
            connections,
            waiting,
        }
    }

    /// The budget under this process's current open-file limit.
    pub fn for_this_process(inputs: impl FnOnce(usize) -> BudgetInputs) -> Budget {
        let open_files = rlimit::Resource::NOFILE
            .get()
            .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
            .unwrap_or(1024);
        Budget::derive(inputs(open_files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(open_files: usize) -> BudgetInputs {
        BudgetInputs {
            open_files,
            fd_reserve: 256,
            max_pending_auth: 2000,
            max_connections: None,
            admin_listener: false,
        }
    }

    #[test]
    fn waiting_sockets_never_take_the_reserve() {
        let budget = Budget::derive(inputs(4096));
        assert_eq!(budget.connections, 4096 - 128);
        assert_eq!(budget.waiting, 2000);

        let tight = Budget::derive(inputs(1024));
        assert_eq!(tight.connections, 1024 - 128);
        assert_eq!(tight.waiting, 1024 - 128 - 256);

        let admin = Budget::derive(BudgetInputs {
            admin_listener: true,
            ..inputs(1024)
        });
        assert_eq!(admin.connections, 1024 - 128 - 32);
    }

    #[test]
    fn waiting_sockets_hold_at_most_half_the_connection_slots() {
        let budget = Budget::derive(BudgetInputs {
            max_connections: Some(51),
            ..inputs(1 << 20)
        });
        assert_eq!(budget.waiting, 26);
    }

    #[test]
    fn a_tiny_limit_still_accepts() {
        let budget = Budget::derive(inputs(64));
        assert_eq!(budget.connections, 1);
        assert_eq!(budget.waiting, 0);
    }
}
