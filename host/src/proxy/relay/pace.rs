//! When a relay thread pauses between batches: plain data in (which connections had events,
//! the bytes moved, the time), a decision out; no I/O, so it is tested without sockets.
//!
//! A relay thread that looks for events again the moment it has moved the last bytes sleeps
//! in `epoll_wait` after almost every event under load, and each of those sleeps costs
//! whoever writes next a cross-core wake-up of it: on a virtual machine, an inter-processor
//! interrupt to a halted vCPU, paid by the writer (a backend, a client) on its own core. It
//! also reads a response the endpoint wrote as two pieces (a head, then a body) in two reads,
//! and forwards it as two segments, for a pure ACK more. So while many connections are
//! active, the thread sleeps a fixed short pause after each batch, on its own timer, and then
//! takes everything that arrived meanwhile in one batch, as a NIC's interrupt moderation
//! does. With one or a few connections active (a single client, a ping-pong with a fast
//! backend) there is nothing to batch and the pause would only add latency, so it never
//! pauses then; nor when the events carry large reads (1 KiB or more an event, as with 16 KiB
//! responses), where copying the bytes outweighs the wake-ups and the pause's own sleeps cost
//! more than they save (measured: 7.5% more CPU per request for 3% more requests).

use std::time::{Duration, Instant};

/// `--relay-pause-us`'s default.
pub(in crate::proxy) const DEFAULT_PAUSE: Duration = Duration::from_micros(10);

/// The span over which active connections are counted.
pub(super) const WINDOW: Duration = Duration::from_millis(1);

/// Connections with events in the last [`WINDOW`] from which the thread pauses.
pub(super) const BUSY_CONNS: u32 = 8;

/// Bytes moved per event in the last [`WINDOW`] below which the thread pauses.
pub(super) const SMALL_BYTES: u64 = 1024;

/// Counts the connections with events, the events and the bytes moved per window, and says
/// when to pause.
#[derive(Debug)]
pub(super) struct Pacer {
    /// Zero: never pause.
    pause: Duration,
    /// Number of the current window; a connection's mark holds the last window it was
    /// counted in (a new connection's mark is 0, never a window's number).
    window: u32,
    started: Instant,
    /// Distinct connections with events in the current window.
    active: u32,
    /// Events and bytes moved in the current window.
    events: u64,
    bytes: u64,
    /// The last window closed with at least [`BUSY_CONNS`] active connections and under
    /// [`SMALL_BYTES`] an event.
    busy: bool,
}

impl Pacer {
    pub(super) fn new(pause: Duration, now: Instant) -> Pacer {
        Pacer {
            pause,
            window: 1,
            started: now,
            active: 0,
            events: 0,
            bytes: 0,
            busy: false,
        }
    }

    /// A connection had an event; `mark` is that connection's window mark.
    pub(super) fn saw(&mut self, mark: &mut u32) {
        self.events += 1;
        if *mark != self.window {
            *mark = self.window;
            self.active += 1;
        }
    }

    /// Bytes the thread moved (both directions, all connections).
    pub(super) fn moved(&mut self, bytes: u64) {
        self.bytes += bytes;
    }

    /// After a batch of events: the pause to take before looking for events again, if any.
    /// `more` says some connection still has reads left to do at once (then no pause).
    pub(super) fn after_batch(&mut self, now: Instant, more: bool) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= WINDOW {
            // A window that ended long ago (the thread slept through the next) says nothing
            // of the load now.
            self.busy = elapsed < 2 * WINDOW
                && self.active >= BUSY_CONNS
                && self.bytes < SMALL_BYTES * self.events.max(1);
            self.window = self.window.wrapping_add(1).max(1);
            self.started = now;
            (self.active, self.events, self.bytes) = (0, 0, 0);
        }
        (self.busy && !more && !self.pause.is_zero()).then_some(self.pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAUSE: Duration = Duration::from_micros(20);

    /// Feeds `conns` connections one event each per 100 µs for `span`, a batch per event that
    /// moved 200 bytes; returns how many batches were followed by a pause.
    fn run(p: &mut Pacer, marks: &mut [u32], t: &mut Instant, span: Duration) -> usize {
        run_moving(p, marks, t, span, 200)
    }

    /// [`run`] with `bytes` moved per event.
    fn run_moving(
        p: &mut Pacer,
        marks: &mut [u32],
        t: &mut Instant,
        span: Duration,
        bytes: u64,
    ) -> usize {
        let end = *t + span;
        let mut paused = 0;
        while *t < end {
            for m in marks.iter_mut() {
                p.saw(m);
                p.moved(bytes);
                paused += usize::from(p.after_batch(*t, false).is_some());
            }
            *t += Duration::from_micros(100);
        }
        paused
    }

    #[test]
    fn a_few_connections_never_pause() {
        let mut t = Instant::now();
        let mut p = Pacer::new(PAUSE, t);
        let mut marks = [0; BUSY_CONNS as usize - 1];
        assert_eq!(
            run(&mut p, &mut marks, &mut t, Duration::from_millis(20)),
            0
        );
    }

    #[test]
    fn many_connections_pause_from_the_next_window_on() {
        let mut t = Instant::now();
        let mut p = Pacer::new(PAUSE, t);
        let mut marks = [0; BUSY_CONNS as usize];
        // The first window only counts.
        assert_eq!(run(&mut p, &mut marks, &mut t, WINDOW), 0);
        let paused = run(&mut p, &mut marks, &mut t, Duration::from_millis(5));
        assert_eq!(paused, 50 * marks.len());
        assert_eq!(p.after_batch(t, false), Some(PAUSE));
    }

    #[test]
    fn no_pause_while_a_connection_has_reads_left_or_when_off() {
        let mut t = Instant::now();
        let mut p = Pacer::new(PAUSE, t);
        let mut marks = [0; 16];
        run(&mut p, &mut marks, &mut t, Duration::from_millis(2));
        assert_eq!(p.after_batch(t, true), None);
        assert_eq!(p.after_batch(t, false), Some(PAUSE));

        let mut t = Instant::now();
        let mut off = Pacer::new(Duration::ZERO, t);
        assert_eq!(
            run(&mut off, &mut marks, &mut t, Duration::from_millis(5)),
            0
        );
    }

    #[test]
    fn load_that_drops_or_a_long_sleep_stops_the_pauses() {
        let mut t = Instant::now();
        let mut p = Pacer::new(PAUSE, t);
        let mut many = [0; 16];
        run(&mut p, &mut many, &mut t, Duration::from_millis(3));
        assert!(p.after_batch(t, false).is_some());
        // Down to one connection: pauses end once the window with many has closed.
        let mut one = [0; 1];
        let paused = run(&mut p, &mut one, &mut t, Duration::from_millis(5));
        assert!(paused <= 10, "{paused} pauses with one connection");
        assert_eq!(p.after_batch(t, false), None);

        // Busy again, then the thread sleeps for a second: the stale window does not count.
        run(&mut p, &mut many, &mut t, Duration::from_millis(3));
        assert!(p.after_batch(t, false).is_some());
        p.saw(&mut many[0]);
        assert_eq!(p.after_batch(t + Duration::from_secs(1), false), None);
    }

    #[test]
    fn large_reads_never_pause() {
        let mut t = Instant::now();
        let mut p = Pacer::new(PAUSE, t);
        let mut marks = [0; 16];
        let big = run_moving(
            &mut p,
            &mut marks,
            &mut t,
            Duration::from_millis(5),
            16 * 1024,
        );
        assert_eq!(big, 0);
        // Small ones again: pauses from the next window on.
        run(&mut p, &mut marks, &mut t, Duration::from_millis(2));
        assert_eq!(p.after_batch(t, false), Some(PAUSE));
    }

    #[test]
    fn a_connection_counts_once_per_window() {
        let t = Instant::now();
        let mut p = Pacer::new(PAUSE, t);
        let mut mark = 0;
        for _ in 0..100 {
            p.saw(&mut mark);
        }
        assert_eq!(p.active, 1);
        // The window's number never comes back to a new connection's mark of 0.
        p.window = u32::MAX;
        assert!(p.after_batch(t + WINDOW, false).is_none());
        assert_eq!(p.window, 1);
    }
}
