//! A call's deadline counted in the CPU it gets, not in the time its thread
//! waits for a CPU.
//!
//! The epoch ([`super::epoch`]) ends a window of `deadline` wall-clock time;
//! at the end of one, wasmtime calls [`Deadline::window_ended`], which reads
//! the thread's CPU clock. A call is stopped at the end of a window after
//! the first in which its thread had the CPU for at least half the window
//! (it was running, not waiting), or at the end of the [`MAX_WINDOWS`]th
//! window whatever happened. So:
//!
//! - an endless loop is stopped after two windows (twice its deadline);
//! - a call that needs at most half its deadline of CPU is never stopped
//!   for time, however long its thread waits for a core, up to
//!   [`MAX_WINDOWS`] deadlines (a host so oversubscribed that it waits
//!   longer gets 503s, as before);
//! - a call pays nothing until its deadline passes: the CPU clock (a
//!   system call) is read only at the end of a window, never at the start
//!   of a call.
//!
//! The first window's CPU time is not known (reading the clock when every
//! call starts would cost a system call a request), hence the second
//! window before any call is stopped. Cloudflare's Workers limit CPU time,
//! not wall-clock time, for the same reason: a neighbour's load must not
//! fail a quick script.

use std::time::Duration;

use wasmtime::UpdateDeadline;

use super::epoch::EPOCH_TICK;

/// The most windows (deadlines) a call gets, however little CPU it had.
pub(crate) const MAX_WINDOWS: u32 = 10;

/// One call's deadline: its window and how far it has come.
#[derive(Debug, Default)]
pub(crate) struct Deadline {
    /// One window, in epoch ticks, and as time.
    ticks: u64,
    window: Duration,
    /// Windows ended in this call.
    ended: u32,
    /// The thread's CPU clock at the end of the previous window.
    mark: Option<Duration>,
}

impl Deadline {
    /// A call starts with windows of `ticks` epoch ticks.
    pub(crate) fn start(&mut self, ticks: u64) {
        *self = Deadline {
            ticks,
            window: EPOCH_TICK.saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX)),
            ended: 0,
            mark: None,
        };
    }

    /// A window ended with the thread's CPU clock at `cpu` (None when it
    /// cannot be read: the call is stopped, as a plain deadline would):
    /// another window, or the call stopped.
    pub(crate) fn window_ended(&mut self, cpu: Option<Duration>) -> UpdateDeadline {
        self.ended += 1;
        let Some(cpu) = cpu else {
            return UpdateDeadline::Interrupt;
        };
        if self.ended >= MAX_WINDOWS {
            return UpdateDeadline::Interrupt;
        }
        let ran = self.mark.map(|mark| cpu.saturating_sub(mark));
        if ran.is_some_and(|ran| ran >= self.window / 2) {
            return UpdateDeadline::Interrupt;
        }
        self.mark = Some(cpu);
        UpdateDeadline::Continue(self.ticks)
    }
}

/// The calling thread's CPU time (user and system), if the clock reads.
pub(crate) fn thread_cpu() -> Option<Duration> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u32::try_from(now.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn stopped(u: &UpdateDeadline) -> bool {
        matches!(u, UpdateDeadline::Interrupt)
    }

    const MS: Duration = Duration::from_millis(1);

    /// A call that keeps the CPU (an endless loop) is stopped at the end
    /// of its second window; the first only takes the clock's mark.
    #[test]
    fn a_running_call_is_stopped_after_two_windows() {
        let mut d = Deadline::default();
        d.start(6);
        assert!(matches!(
            d.window_ended(Some(100 * MS)),
            UpdateDeadline::Continue(6)
        ));
        assert!(stopped(&d.window_ended(Some(106 * MS))));
        // Half the window is enough to count as running.
        d.start(6);
        d.window_ended(Some(Duration::ZERO));
        assert!(stopped(&d.window_ended(Some(3 * MS))));
    }

    /// A call whose thread waited for a core goes on, window after window,
    /// while it had less than half of each; at most MAX_WINDOWS in all.
    #[test]
    fn a_waiting_call_goes_on_up_to_the_cap() {
        let mut d = Deadline::default();
        d.start(6);
        let mut cpu = 50 * MS;
        for window in 1..MAX_WINDOWS {
            assert!(
                matches!(d.window_ended(Some(cpu)), UpdateDeadline::Continue(6)),
                "window {window}"
            );
            cpu += 2 * MS;
        }
        assert!(stopped(&d.window_ended(Some(cpu))));
        // A new call starts afresh.
        d.start(6);
        assert!(matches!(
            d.window_ended(Some(cpu)),
            UpdateDeadline::Continue(6)
        ));
    }

    /// Without a CPU clock the deadline is a plain one.
    #[test]
    fn no_clock_stops_at_the_first_window() {
        let mut d = Deadline::default();
        d.start(6);
        assert!(stopped(&d.window_ended(None)));
    }

    /// The thread's CPU clock reads and moves with work, not with sleep.
    #[test]
    fn the_thread_clock_counts_work_not_sleep() {
        let before = thread_cpu().expect("thread CPU clock");
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu().expect("clock") - before;
        assert!(slept < Duration::from_millis(15), "{slept:?}");
        let start = thread_cpu().expect("clock");
        let mut n = 0u64;
        while thread_cpu().expect("clock") - start < Duration::from_millis(5) {
            n = std::hint::black_box(n + 1);
        }
        assert!(n > 0);
    }
}
