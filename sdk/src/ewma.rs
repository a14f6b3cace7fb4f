//! Exponentially weighted moving average with a half-life in time (not in samples), as
//! latency-aware balancers (p2c-ewma, Finagle's and linkerd's "peak EWMA") use.

/// A moving average with a half-life in time; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Ewma {
    half_life_nanos: f64,
    value: f64,
    last: Option<u64>,
}

impl Ewma {
    /// Starts at `initial`; history halves in weight every `half_life_nanos`.
    pub fn new(half_life_nanos: u64, initial: f64) -> Self {
        Ewma {
            half_life_nanos: half_life_nanos.max(1) as f64,
            value: initial,
            last: None,
        }
    }

    /// Folds in a sample taken at `now_nanos`; older history decays by half per half-life.
    pub fn observe(&mut self, sample: f64, now_nanos: u64) {
        let w = match self.last {
            None => 0.0,
            Some(t) => 0.5f64.powf(now_nanos.saturating_sub(t) as f64 / self.half_life_nanos),
        };
        self.value = self.value * w + sample * (1.0 - w);
        self.last = Some(now_nanos);
    }

    /// The current average.
    pub fn value(&self) -> f64 {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decays_by_half_per_half_life() {
        let mut e = Ewma::new(1_000, 0.0);
        e.observe(100.0, 0);
        assert_eq!(e.value(), 100.0, "first sample sets the value");
        e.observe(0.0, 1_000);
        assert!((e.value() - 50.0).abs() < 1e-9);
        e.observe(0.0, 3_000);
        assert!((e.value() - 12.5).abs() < 1e-9);
    }
}
