//! PIN generation (SPEC §7 step 5): uniform over 000000–999999 from the OS
//! CSPRNG, rejecting trivial PINs ([`crate::profile::is_trivial_pin`]: all
//! digits equal, ascending or descending runs, the firmware profile's blocklist).

use crate::secret::SecretString;
use rand::Rng;
use rand_core::OsRng;

/// PIN length this product ships (SPEC §1).
pub const PIN_DIGITS: usize = 6;

pub use crate::profile::is_trivial_pin as is_trivial;

/// A fresh random PIN of [`PIN_DIGITS`] digits that is not trivial.
pub fn generate(blocklist: &[String]) -> SecretString {
    loop {
        // gen_range is rejection-sampled, so every value is equally likely.
        let n: u32 = OsRng.gen_range(0..1_000_000);
        let pin = SecretString::new(format!("{n:06}"));
        if !is_trivial(pin.expose(), blocklist) {
            return pin;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivial_pins_are_recognised() {
        let block = vec!["123123".to_string(), "111222".to_string()];
        for pin in [
            "000000", "999999", "123456", "012345", "456789", "987654", "543210", "123123",
        ] {
            assert!(is_trivial(pin, &block), "{pin}");
        }
        for pin in ["482913", "123457", "112233", "102030"] {
            assert!(!is_trivial(pin, &block), "{pin}");
        }
    }

    #[test]
    fn generated_pins_are_six_digits_and_spread() {
        let mut first_digits = [0u32; 10];
        for _ in 0..2000 {
            let pin = generate(&[]);
            let p = pin.expose();
            assert_eq!(p.len(), 6);
            assert!(p.bytes().all(|b| b.is_ascii_digit()));
            assert!(!is_trivial(p, &[]));
            first_digits[(p.as_bytes()[0] - b'0') as usize] += 1;
        }
        // Each leading digit is expected ~200 times; a broken generator (fixed
        // digit, no leading zeros) would leave one far below that.
        assert!(first_digits.iter().all(|&n| n > 100), "{first_digits:?}");
    }
}
