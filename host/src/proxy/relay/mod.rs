//! The L4 byte relay. Once [`super::tcp`] has accepted, admitted, picked and connected a
//! plain TCP connection, its two sockets come here, in two stages:
//!
//! - [`task`]: one tokio task per worker copies the bytes of its new connections. Their
//!   sockets stay with the worker's driver, so adopting one costs no syscall; a short
//!   connection (a request or two, then close) lives and ends here.
//! - [`thread`]: once a connection has shown it lasts ([`SETTLE_AFTER_READS`] reads with
//!   data), it moves to the worker's relay thread, which has an epoll instance of its own
//!   (`mio`): a readiness event there costs no tokio driver bookkeeping, no waker and no task
//!   poll. Moving costs two `epoll_ctl` calls each way and a wake-up of that thread, which a
//!   long connection pays once and a short one never. While many connections are busy with
//!   small reads, the thread pauses briefly after each batch ([`pace`]).
//!
//! Both copy through one 64 KiB scratch buffer per relay (an idle connection holds no
//! buffer), keep half-close (a FIN is passed on as `shutdown(SHUT_WR)` once everything before
//! it is written), and end a connection by calling its [`Done`] before its sockets close.
//! Touches only the sockets handed to it.

mod pace;
mod task;
mod thread;

#[cfg(test)]
mod tests;

pub(super) use pace::DEFAULT_PAUSE;
pub(super) use task::adopt;
pub(super) use thread::set_pause;

/// Called once when a relayed connection ends, with the bytes copied each way (client →
/// endpoint, endpoint → client) or the error that ended it; on the worker while the
/// connection is in its task, on the relay thread once it moved there. The two sockets close
/// after it returns, so a drain registration naming their descriptors can be dropped inside
/// it.
pub(super) type Done = Box<dyn FnOnce(std::io::Result<[u64; 2]>) + Send>;

/// A relay's read buffer, shared by all its connections.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Reads per direction in one turn of a connection (1 MiB at most): a bulk transfer then
/// waits its turn behind the relay's other connections instead of holding it for as long as
/// both of its peers keep up.
const READS_PER_TURN: usize = 16;

/// Reads with data after which a connection moves from the worker's task to its relay
/// thread: four request/response exchanges. A connection that ends sooner never pays for
/// the move.
const SETTLE_AFTER_READS: u32 = 8;

/// One direction of a connection.
#[derive(Default)]
struct Half {
    /// Read but not yet written.
    stash: Vec<u8>,
    /// The source has sent its FIN.
    eof: bool,
    /// The FIN has been passed on.
    shut: bool,
    total: u64,
}

/// How a connection's turn ended.
enum Turn {
    /// Both FINs passed on, after copying these bytes (client → endpoint, endpoint → client).
    Done([u64; 2]),
    /// Every socket it needs would block (the task: its waker is registered).
    Waiting,
    /// A direction used its reads for the turn with bytes perhaps still to come.
    Unfinished,
}

impl Turn {
    /// How a turn that left `halves` so ended, each direction waiting (`true`) or not.
    fn after(halves: [&Half; 2], up_waits: bool, down_waits: bool) -> Turn {
        if halves[0].shut && halves[1].shut {
            Turn::Done([halves[0].total, halves[1].total])
        } else if up_waits && down_waits {
            Turn::Waiting
        } else {
            Turn::Unfinished
        }
    }
}

/// What a relay does with connection `key` after a turn: `None` keeps it (queued in `again`
/// when it has reads left for another turn), `Some` is how it ended, for its [`Done`].
fn ended(
    turn: std::io::Result<Turn>,
    key: usize,
    again: &mut Vec<usize>,
) -> Option<std::io::Result<[u64; 2]>> {
    match turn {
        Ok(Turn::Waiting) => None,
        Ok(Turn::Unfinished) => {
            again.push(key);
            None
        }
        Ok(Turn::Done(totals)) => Some(Ok(totals)),
        Err(e) => Some(Err(e)),
    }
}
