//! The memory that requests in flight may hold, across every connection.
//!
//! A request reserves what its body will take before the body is read (its
//! `Content-Length`, or the most it may be), and what its events will take once it knows
//! how many there are; the reservation is returned when the answer is sent. Past the
//! budget a request is refused with 429 instead of growing the process.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in units of this many bytes (a semaphore holds at most
/// `u32::MAX` permits per acquisition).
const UNIT: u64 = 1024;

/// The budget shared by every request.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total: u64,
}

/// Why a reservation was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// More than the whole budget: this request can never fit.
    TooLarge { wanted: u64, total: u64 },
    /// Other requests hold the budget now; retry shortly.
    Busy,
}

/// Bytes held until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: MemoryBudget,
    permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

impl MemoryBudget {
    pub fn new(total_bytes: u64) -> Self {
        let units = total_bytes
            .div_ceil(UNIT)
            .clamp(1, Semaphore::MAX_PERMITS as u64);
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            total: units * UNIT,
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }

    /// Reserves `bytes` now, or refuses without waiting.
    pub fn try_reserve(&self, bytes: u64) -> Result<Reservation, Refused> {
        let mut r = Reservation {
            budget: self.clone(),
            permit: None,
            bytes: 0,
        };
        r.grow_to(bytes)?;
        Ok(r)
    }
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Holds at least `bytes` in all (never shrinks), or refuses and keeps what it held.
    pub fn grow_to(&mut self, bytes: u64) -> Result<(), Refused> {
        if bytes <= self.bytes {
            return Ok(());
        }
        if bytes > self.budget.total {
            return Err(Refused::TooLarge {
                wanted: bytes,
                total: self.budget.total,
            });
        }
        let held = self.bytes.div_ceil(UNIT);
        let more = bytes.div_ceil(UNIT) - held;
        let more = u32::try_from(more).map_err(|_| Refused::TooLarge {
            wanted: bytes,
            total: self.budget.total,
        })?;
        let permit = self
            .budget
            .permits
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| Refused::Busy)?;
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        self.bytes = bytes.div_ceil(UNIT) * UNIT;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_returned() {
        let budget = MemoryBudget::new(10 * UNIT);
        let mut a = budget.try_reserve(4 * UNIT).unwrap();
        let b = budget.try_reserve(5 * UNIT).unwrap();
        assert_eq!(budget.try_reserve(2 * UNIT).unwrap_err(), Refused::Busy);
        assert_eq!(a.grow_to(6 * UNIT).unwrap_err(), Refused::Busy);
        assert_eq!(a.bytes(), 4 * UNIT, "a refused growth keeps what was held");
        assert!(matches!(
            budget.try_reserve(11 * UNIT),
            Err(Refused::TooLarge { .. })
        ));
        drop(b);
        a.grow_to(6 * UNIT).unwrap();
        assert_eq!(budget.available(), 4 * UNIT);
        drop(a);
        assert_eq!(budget.available(), 10 * UNIT);
    }
}
