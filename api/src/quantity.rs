//! Quantities written as text in specs: sizes ("64MiB"), durations ("2s")
//! and fuel budgets.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bounds::{MAX_DURATION, MAX_FUEL, MAX_SIZE};

/// Why a size, duration or fuel value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a size.
    #[error(
        "invalid size {0:?}: write a whole number followed by B, KiB, MiB, GiB (or KB, MB, GB, Ki, Mi, Gi), like \"64MiB\""
    )]
    Size(String),
    /// Not a duration.
    #[error(
        "invalid duration {0:?}: write whole numbers with units ms, s, m or h, like \"500ms\", \"2s\" or \"1m30s\""
    )]
    Duration(String),
    /// A size above [`MAX_SIZE`].
    #[error("size {0:?} is too large: the most Shoal reads is {max}", max = MAX_SIZE)]
    SizeTooLarge(String),
    /// A duration above [`MAX_DURATION`].
    #[error(
        "duration {0:?} is too long: the most Shoal reads is {max}",
        max = DurationSpec::new(MAX_DURATION)
    )]
    DurationTooLarge(String),
    /// Not a percentage from 0% to 100%.
    #[error(
        "invalid share {0:?}: write a percentage from 0% to 100% with at most two decimals, like \"5%\" or \"0.5%\""
    )]
    Share(String),
}

/// A number of bytes, written in specs as `"64MiB"`, `"1GiB"`, `"512KiB"`,
/// `"10MB"` or a bare integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(u64);

impl ByteSize {
    /// `n` bytes.
    pub const fn bytes(n: u64) -> Self {
        ByteSize(n)
    }

    /// `n` mebibytes (saturating at `u64::MAX` bytes).
    pub const fn mib(n: u64) -> Self {
        ByteSize(n.saturating_mul(1 << 20))
    }

    /// The size in bytes.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Parses `"64MiB"` and friends, up to [`MAX_SIZE`].
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let bad = || QuantityError::Size(text.to_string());
        let too_large = || QuantityError::SizeTooLarge(text.to_string());
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit() && c != '_')
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let digits: String = digits.chars().filter(|c| *c != '_').collect();
        if digits.is_empty() {
            return Err(bad());
        }
        // Only digits are left, so parsing fails only past `u64::MAX`.
        let number: u64 = digits.parse().map_err(|_| too_large())?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "Ki" => 1 << 10,
            "MiB" | "Mi" => 1 << 20,
            "GiB" | "Gi" => 1 << 30,
            "TiB" | "Ti" => 1 << 40,
            "KB" | "kB" | "K" | "k" => 1_000,
            "MB" | "M" => 1_000_000,
            "GB" | "G" => 1_000_000_000,
            "TB" | "T" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .filter(|size| *size <= MAX_SIZE)
            .ok_or_else(too_large)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a size like \"64MiB\" or a whole number of bytes")
        })? {
            Raw::Bytes(n) if ByteSize(n) <= MAX_SIZE => Ok(ByteSize(n)),
            Raw::Bytes(n) => Err(serde::de::Error::custom(QuantityError::SizeTooLarge(
                n.to_string(),
            ))),
            Raw::Text(text) => ByteSize::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written in specs as `"500ms"`, `"2s"`, `"5m"`, `"1h"` or a
/// sum of these, like `"1m30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationSpec(Duration);

impl DurationSpec {
    /// Wraps a [`Duration`].
    pub const fn new(d: Duration) -> Self {
        DurationSpec(d)
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }

    /// Parses `"1m30s"` and friends, up to [`MAX_DURATION`].
    ///
    /// Parts are added up in milliseconds with checked arithmetic, so no
    /// input overflows: a number too large for any clock is refused with
    /// the maximum named.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let bad = || QuantityError::Duration(text.to_string());
        let too_large = || QuantityError::DurationTooLarge(text.to_string());
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total_ms: u64 = 0;
        while !rest.is_empty() {
            let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let (digits, tail) = rest.split_at(split);
            if digits.is_empty() {
                return Err(bad());
            }
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let unit_ms: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(bad()),
            };
            // Only digits, so parsing fails only past `u64::MAX`.
            let number: u64 = digits.parse().map_err(|_| too_large())?;
            let part = number.checked_mul(unit_ms).ok_or_else(too_large)?;
            total_ms = total_ms.checked_add(part).ok_or_else(too_large)?;
            rest = tail;
        }
        let total = Duration::from_millis(total_ms);
        if total > MAX_DURATION {
            return Err(too_large());
        }
        Ok(DurationSpec(total))
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else if !ms.is_multiple_of(60_000) || ms == 0 {
            write!(f, "{}s", ms / 1000)
        } else if !ms.is_multiple_of(3_600_000) {
            write!(f, "{}m", ms / 60_000)
        } else {
            write!(f, "{}h", ms / 3_600_000)
        }
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration in quotes, like \"2s\" or \"500ms\"")
        })?;
        DurationSpec::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A CPU budget per invocation in wasmtime fuel units (about one unit per
/// Wasm instruction), or `"off"` to rely on the deadline alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fuel {
    /// No fuel budget: only the wall-clock deadline stops a busy guest.
    Off,
    /// This many units per invocation.
    Units(u64),
}

impl Fuel {
    /// The budget, if there is one.
    pub fn units(self) -> Option<u64> {
        match self {
            Fuel::Off => None,
            Fuel::Units(n) => Some(n),
        }
    }
}

impl fmt::Display for Fuel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fuel::Off => f.write_str("off"),
            Fuel::Units(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Fuel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Fuel::Off);
        }
        let digits: String = s.chars().filter(|c| *c != '_').collect();
        match digits.parse::<u64>() {
            Ok(0) | Err(_) => Err(format!(
                "invalid fuel {s:?}: write a whole number of units from 1 to {MAX_FUEL}, like 50_000_000, or \"off\""
            )),
            Ok(n) => Ok(Fuel::Units(n)),
        }
    }
}

impl Serialize for Fuel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Fuel::Off => s.serialize_str("off"),
            Fuel::Units(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Fuel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Units(i64),
            Text(String),
        }
        let expected =
            "expected a positive whole number of fuel units, like 50_000_000, or \"off\"";
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom(expected))? {
            Raw::Units(n) if n > 0 => Ok(Fuel::Units(n.unsigned_abs())),
            Raw::Units(_) => Err(serde::de::Error::custom(expected)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A share of traffic or a rate, written in specs as `"5%"` or `"0.25%"`
/// and kept in basis points (hundredths of a percent), so comparing and
/// adding shares is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Share(u32);

impl Share {
    /// Basis points in the whole: 100%.
    pub const WHOLE: u32 = 10_000;

    /// `bp` basis points (capped at 100%).
    pub const fn basis_points(bp: u32) -> Self {
        Share(if bp > Share::WHOLE { Share::WHOLE } else { bp })
    }

    /// `n` percent (capped at 100%).
    pub const fn percent(n: u32) -> Self {
        Share::basis_points(n.saturating_mul(100))
    }

    /// The share in basis points.
    pub const fn as_basis_points(self) -> u32 {
        self.0
    }

    /// The share as a fraction from 0 to 1.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / f64::from(Share::WHOLE)
    }

    /// Whether the `n`-th request (from 0) of a run is one of this share.
    ///
    /// Requests are picked evenly rather than drawn at random: request `n`
    /// is picked when it carries the running share over the next whole
    /// number. Over any run of requests the count picked is within one of
    /// the share, and nothing random is drawn per request.
    pub fn picks(self, n: u64) -> bool {
        let share = u128::from(self.0);
        let whole = u128::from(Share::WHOLE);
        let n = u128::from(n);
        (n + 1) * share / whole > n * share / whole
    }

    /// Parses `"5%"`, `"0.5%"` or `"12.25%"`: at most two decimals, at
    /// most 100%.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let bad = || QuantityError::Share(text.to_string());
        let number = text.trim().strip_suffix('%').ok_or_else(bad)?.trim();
        let (whole, decimals) = number.split_once('.').unwrap_or((number, ""));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (!decimals.is_empty() && !digits(decimals)) || decimals.len() > 2 {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let hundredths: u32 = format!("{decimals:0<2}").parse().map_err(|_| bad())?;
        let bp = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(hundredths))
            .filter(|bp| *bp <= Share::WHOLE)
            .ok_or_else(bad)?;
        Ok(Share(bp))
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, rest) = (self.0 / 100, self.0 % 100);
        match rest {
            0 => write!(f, "{whole}%"),
            r if r % 10 == 0 => write!(f, "{whole}.{}%", r / 10),
            r => write!(f, "{whole}.{r:02}%"),
        }
    }
}

impl Serialize for Share {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a percentage in quotes, like \"5%\" or \"0.5%\"")
        })?;
        Share::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `ms` milliseconds in their largest unit, rounded down: "4s", "3m",
/// "2h", "5d" (seconds up to 2 minutes, minutes up to 2 hours, hours up to
/// 2 days): how the CLI and the dashboard say how long ago or how soon.
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..120 => format!("{s}s"),
        120..7_200 => format!("{}m", s / 60),
        7_200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn shares_read_and_print_in_percent() {
        for (text, bp, shown) in [
            ("5%", 500, "5%"),
            ("0.5%", 50, "0.5%"),
            ("12.25%", 1225, "12.25%"),
            ("100%", 10_000, "100%"),
            (" 1 %", 100, "1%"),
        ] {
            let share = Share::parse(text).unwrap();
            assert_eq!(share.as_basis_points(), bp, "{text}");
            assert_eq!(share.to_string(), shown);
        }
        for bp in [1, 500, 2500, 5000, 9999] {
            let share = Share::basis_points(bp);
            for (start, len) in [(0u64, 2000u64), (7, 333), (u64::MAX - 3000, 2000)] {
                let picked = (start..start + len).filter(|n| share.picks(*n)).count() as f64;
                let wanted = len as f64 * share.fraction();
                assert!(
                    (picked - wanted).abs() <= 1.0,
                    "{share} from {start}: {picked} vs {wanted}"
                );
            }
        }
        assert!(!(0..10_000).any(|n| Share::basis_points(0).picks(n)));
        assert!((0..10_000).all(|n| Share::percent(100).picks(n)));
        for bad in [
            "5",
            "101%",
            "1.234%",
            "-1%",
            "%",
            "x%",
            ".5%",
            "99999999999%",
        ] {
            let err = Share::parse(bad).unwrap_err().to_string();
            assert!(err.contains("invalid share"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("64MiB").unwrap(), ByteSize::mib(64));
        assert_eq!(ByteSize::parse("64Mi").unwrap(), ByteSize::mib(64));
        assert_eq!(ByteSize::parse("1GiB").unwrap().as_u64(), 1 << 30);
        assert_eq!(ByteSize::parse("10MB").unwrap().as_u64(), 10_000_000);
        assert_eq!(ByteSize::parse("4096").unwrap().as_u64(), 4096);
        assert_eq!(ByteSize::mib(64).to_string(), "64MiB");
        for bad in ["", "MiB", "64XB", "-1MiB", "1.5GiB", "64 megs"] {
            let err = ByteSize::parse(bad).unwrap_err().to_string();
            assert!(err.contains("invalid size"), "{bad}: {err}");
        }
    }

    #[test]
    fn huge_sizes_are_refused_naming_the_maximum() {
        assert_eq!(ByteSize::parse("1024TiB").unwrap(), MAX_SIZE);
        assert_eq!(
            ByteSize::parse(&MAX_SIZE.as_u64().to_string()).unwrap(),
            MAX_SIZE
        );
        for huge in [
            "99999999999999GiB",
            "99999999999TiB",
            "1025TiB",
            "1125899906842625",
            "18446744073709551615",
            "99999999999999999999999999",
        ] {
            let err = ByteSize::parse(huge).unwrap_err();
            assert_eq!(err, QuantityError::SizeTooLarge(huge.to_string()));
            assert!(
                err.to_string().contains("the most Shoal reads is 1024TiB"),
                "{err}"
            );
        }
        let err = toml::from_str::<BTreeMap<String, ByteSize>>("size = 9223372036854775807")
            .unwrap_err()
            .to_string();
        assert!(err.contains("too large"), "{err}");
        assert_eq!(ByteSize::mib(u64::MAX).as_u64(), u64::MAX);
    }

    #[test]
    fn huge_durations_are_refused_naming_the_maximum() {
        assert_eq!(DurationSpec::parse("168h").unwrap().get(), MAX_DURATION);
        assert_eq!(
            DurationSpec::parse("167h59m59s1000ms").unwrap().get(),
            MAX_DURATION
        );
        for huge in [
            "18446744073709551615s",
            "18446744073709551615ms",
            "99999999999999999999999h",
            "168h1ms",
            "9223372036854775807m",
            "18446744073709551615ms18446744073709551615ms",
        ] {
            let err = DurationSpec::parse(huge).unwrap_err();
            assert_eq!(err, QuantityError::DurationTooLarge(huge.to_string()));
            assert!(
                err.to_string().contains("the most Shoal reads is 168h"),
                "{err}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            DurationSpec::parse("2s").unwrap().get(),
            Duration::from_secs(2)
        );
        assert_eq!(
            DurationSpec::parse("500ms").unwrap().get(),
            Duration::from_millis(500)
        );
        assert_eq!(
            DurationSpec::parse("1m30s").unwrap().get(),
            Duration::from_secs(90)
        );
        assert_eq!(DurationSpec::parse("1h").unwrap().to_string(), "1h");
        assert_eq!(DurationSpec::parse("1500ms").unwrap().to_string(), "1500ms");
        for bad in ["", "2", "s", "2 s", "1.5s", "2d", "-1s"] {
            assert!(DurationSpec::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn fuel() {
        assert_eq!("off".parse::<Fuel>().unwrap(), Fuel::Off);
        assert_eq!("50_000".parse::<Fuel>().unwrap(), Fuel::Units(50_000));
        assert!("0".parse::<Fuel>().is_err());
        assert!("lots".parse::<Fuel>().is_err());
        let err = "99999999999999999999999".parse::<Fuel>().unwrap_err();
        assert!(err.contains("from 1 to 100000000000000"), "{err}");
    }
}
