//! The per-invocation memory cap.

use wasmtime::ResourceLimiter;

use crate::tunables::MAX_TABLE_ELEMENTS;

/// Caps the linear memory of one instance and remembers whether the guest
/// hit the cap, so a trap that follows can be reported as what it is.
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    max_bytes: usize,
    denied: Option<usize>,
    peak: usize,
}

impl MemoryLimiter {
    /// A limiter allowing at most `max_bytes` of linear memory.
    pub fn new(max_bytes: u64) -> Self {
        MemoryLimiter {
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            denied: None,
            peak: 0,
        }
    }

    /// The most linear memory the instance held.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// The size the guest asked to grow to when it was refused, if it was.
    pub fn denied(&self) -> Option<usize> {
        self.denied
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = Some(desired);
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_growth_past_the_cap_and_remembers() {
        let mut l = MemoryLimiter::new(1 << 20);
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(l.denied(), None);
        assert!(!l.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert_eq!(l.denied(), Some(2 << 20));
    }
}
