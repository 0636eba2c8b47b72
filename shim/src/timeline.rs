//! Where a task's time goes, phase by phase: logged when Create, Start, the init's exit and the
//! teardown are done (`timeline of ID create: rootfs 1.2 ms, ...`), so that the bench
//! (hack/bench.py) names the phase a regression is in.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

/// The environment variable in which the `start` process hands the long-lived shim the moment
/// containerd launched it (CLOCK_MONOTONIC, ns), so its first Create can say what the shim's
/// own start cost.
pub const LAUNCHED_ENV: &str = "BETA9_SHIM_LAUNCHED_NS";

/// Now on CLOCK_MONOTONIC, which is shared by every process of the machine.
pub fn now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default()
}

#[derive(Clone, Debug, Default)]
pub struct Timeline {
    last: Duration,
    phases: Vec<(&'static str, Duration)>,
}

impl Timeline {
    /// A timeline whose first phase ends at the next mark.
    pub fn starting_at(at: Duration) -> Timeline {
        Timeline { last: at, phases: Vec::new() }
    }

    pub fn start() -> Timeline {
        Timeline::starting_at(now())
    }

    /// A Create's timeline: the shim's first begins with its own start ("shim start").
    pub fn for_create() -> Timeline {
        static TAKEN: AtomicBool = AtomicBool::new(false);
        let launched = if TAKEN.swap(true, Ordering::SeqCst) { None } else { launch(std::env::var(LAUNCHED_ENV).ok().as_deref()) };
        match launched {
            Some(at) => {
                let mut t = Timeline::starting_at(at);
                t.mark("shim start");
                t
            }
            None => Timeline::start(),
        }
    }

    /// The phase named `phase` ended now.
    pub fn mark(&mut self, phase: &'static str) {
        self.mark_at(phase, now());
    }

    fn mark_at(&mut self, phase: &'static str, at: Duration) {
        self.phases.push((phase, at.saturating_sub(self.last)));
        self.last = self.last.max(at);
    }

    /// The phases marked since the last line, as one line; the next line's first phase begins here.
    pub fn take_line(&mut self) -> String {
        let line = self.phases.iter().map(|(p, d)| format!("{p} {:.1} ms", d.as_secs_f64() * 1000.0)).collect::<Vec<_>>().join(", ");
        self.phases.clear();
        line
    }
}

/// The launch time the `start` process wrote into LAUNCHED_ENV.
fn launch(value: Option<&str>) -> Option<Duration> {
    value?.parse().ok().map(Duration::from_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_the_time_between_marks_and_a_line_starts_where_the_last_ended() {
        let ms = Duration::from_millis;
        let mut t = Timeline::starting_at(ms(100));
        t.mark_at("shim start", ms(108));
        t.mark_at("runsc create", Duration::from_micros(202_500));
        assert_eq!(t.take_line(), "shim start 8.0 ms, runsc create 94.5 ms");
        t.mark_at("containerd", ms(204));
        assert_eq!(t.take_line(), "containerd 1.5 ms");
        assert_eq!(t.take_line(), "");
    }

    #[test]
    fn a_clock_that_went_back_gives_zero_not_a_wrap() {
        let mut t = Timeline::starting_at(Duration::from_millis(10));
        t.mark_at("odd", Duration::from_millis(5));
        t.mark_at("next", Duration::from_millis(12));
        assert_eq!(t.take_line(), "odd 0.0 ms, next 2.0 ms");
    }

    #[test]
    fn the_launch_is_read_from_the_start_process_and_only_the_first_create_has_it() {
        assert_eq!(launch(Some("123000000")), Some(Duration::from_millis(123)));
        assert_eq!(launch(Some("garbage")), None);
        assert_eq!(launch(None), None);
        // No launch in this test's environment: the first Create starts now, as every later one.
        let first = Timeline::for_create();
        assert!(first.phases.is_empty() && first.last > Duration::ZERO);
        assert!(Timeline::for_create().phases.is_empty());
    }
}
