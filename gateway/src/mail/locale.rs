//! The language of a message: the account's locale, else the request's
//! `Accept-Language`, else English.

/// A locale the templates exist in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Locale {
    #[default]
    En,
    Ru,
}

impl Locale {
    pub const ALL: [Locale; 2] = [Locale::En, Locale::Ru];

    pub fn as_str(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Ru => "ru",
        }
    }

    /// `"en"` or `"ru"` (a stored or requested locale).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "en" => Some(Locale::En),
            "ru" => Some(Locale::Ru),
            _ => None,
        }
    }

    /// The best of en/ru an `Accept-Language` header asks for (RFC 9110
    /// §12.5.4: the highest q wins, the first on a tie; `q=0` means not
    /// acceptable), by primary subtag; None when it names neither.
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut best: Option<(Locale, f32)> = None;
        for item in header.split(',').take(32) {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
            let Some(locale) = Self::parse(&primary) else {
                continue;
            };
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if !(q > 0.0 && q <= 1.0) {
                continue;
            }
            if best.is_none_or(|(_, b)| q > b) {
                best = Some((locale, q));
            }
        }
        best.map(|(l, _)| l)
    }

    /// A duration as the templates' `{ttl}` reads it: "30 minutes",
    /// "24 часа".
    pub fn duration(self, d: std::time::Duration) -> String {
        let secs = d.as_secs().max(1);
        let (n, unit) = if secs.is_multiple_of(3600) {
            (secs / 3600, 0)
        } else if secs.is_multiple_of(60) {
            (secs / 60, 1)
        } else {
            (secs, 2)
        };
        let word = match self {
            Locale::En => {
                let (one, many) = [
                    ("hour", "hours"),
                    ("minute", "minutes"),
                    ("second", "seconds"),
                ][unit];
                if n == 1 { one } else { many }
            }
            Locale::Ru => {
                let forms = [
                    ["час", "часа", "часов"],
                    ["минута", "минуты", "минут"],
                    ["секунда", "секунды", "секунд"],
                ][unit];
                forms[russian_plural(n)]
            }
        };
        format!("{n} {word}")
    }
}

/// Which of the three Russian plural forms `n` takes (1 минута, 2 минуты,
/// 5 минут; 11-14 take the third).
fn russian_plural(n: u64) -> usize {
    match (n % 10, n % 100) {
        (1, r) if r != 11 => 0,
        (2..=4, r) if !(12..=14).contains(&r) => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The highest q wins, q=0 excludes, other languages are skipped.
    #[test]
    fn accept_language_picks_by_quality() {
        assert_eq!(
            Locale::from_accept_language("ru-RU,ru;q=0.9,en;q=0.8"),
            Some(Locale::Ru)
        );
        assert_eq!(
            Locale::from_accept_language("de, en;q=0.5, ru;q=0.7"),
            Some(Locale::Ru)
        );
        assert_eq!(
            Locale::from_accept_language("ru;q=0, en;q=0.1"),
            Some(Locale::En)
        );
        assert_eq!(Locale::from_accept_language("fr, de"), None);
        assert_eq!(Locale::from_accept_language("EN-gb"), Some(Locale::En));
        assert_eq!(
            Locale::from_accept_language("ru;q=nonsense"),
            Some(Locale::Ru)
        );
        assert_eq!(Locale::from_accept_language(""), None);
        // Only the first 32 items are read: a huge header costs nothing more.
        let long = format!("{}ru", "xx;q=1, ".repeat(32));
        assert_eq!(Locale::from_accept_language(&long), None);
        assert_eq!(Locale::from_accept_language(&long[8..]), Some(Locale::Ru));
        assert_eq!(Locale::from_accept_language("ru;q=1.5, en;q=-1"), None);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(Locale::En.duration(Duration::from_secs(1800)), "30 minutes");
        assert_eq!(Locale::En.duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(
            Locale::Ru.duration(Duration::from_secs(24 * 3600)),
            "24 часа"
        );
        assert_eq!(Locale::Ru.duration(Duration::from_secs(1800)), "30 минут");
        assert_eq!(
            Locale::Ru.duration(Duration::from_secs(21 * 60)),
            "21 минута"
        );
        assert_eq!(
            Locale::Ru.duration(Duration::from_secs(11 * 60)),
            "11 минут"
        );
        assert_eq!(Locale::Ru.duration(Duration::from_secs(45)), "45 секунд");
    }
}
