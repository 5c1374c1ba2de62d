//! Name templates: index names (`cwl-%Y.%m.%d`) and S3 key prefixes
//! (`{logGroup}/year=%Y/`). Parsed once; rendered per batch from the event time.

use std::fmt::Write;

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Year,
    Month,
    Day,
    Hour,
    Var(&'static str),
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `%` followed by something other than `Y`, `m`, `d`, `H` or `%`.
    #[error("unknown placeholder %{0} (use %Y, %m, %d, %H or %%)")]
    UnknownTime(String),
    /// `{name}` with a name the template does not offer.
    #[error("unknown placeholder {{{name}}} (known: {known})")]
    UnknownVar {
        /// The name between the braces.
        name: String,
        /// The names this template offers.
        known: String,
    },
    /// A `{` without its `}`, or a `}` without its `{`.
    #[error("unbalanced brace at byte {0}")]
    Unbalanced(usize),
}

/// A UTC hour, the finest unit a template names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcHour {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month 1–12.
    pub month: u32,
    /// Day of month 1–31.
    pub day: u32,
    /// Hour 0–23.
    pub hour: u32,
}

impl UtcHour {
    /// The UTC hour of a Unix timestamp in milliseconds (CloudWatch event time).
    pub fn from_unix_millis(millis: i64) -> UtcHour {
        let secs = millis.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let hour = (secs.rem_euclid(86_400) / 3600) as u32;
        let (year, month, day) = crate::time::civil_from_days(days);
        UtcHour {
            year,
            month,
            day,
            hour,
        }
    }
}

impl Template {
    /// Parses `source`, accepting `{name}` only for names in `vars`.
    pub fn parse(source: &str, vars: &[&'static str]) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            let part = match c {
                '%' => match chars.next().map(|(_, c)| c) {
                    Some('%') => {
                        literal.push('%');
                        continue;
                    }
                    Some('Y') => Part::Year,
                    Some('m') => Part::Month,
                    Some('d') => Part::Day,
                    Some('H') => Part::Hour,
                    other => {
                        return Err(TemplateError::UnknownTime(
                            other.map(String::from).unwrap_or_default(),
                        ));
                    }
                },
                '{' => {
                    let name: String = chars
                        .by_ref()
                        .map(|(_, c)| c)
                        .take_while(|&c| c != '}')
                        .collect();
                    if !source[at..].contains('}') || name.contains('{') {
                        return Err(TemplateError::Unbalanced(at));
                    }
                    match vars.iter().find(|v| **v == name) {
                        Some(v) => Part::Var(v),
                        None => {
                            return Err(TemplateError::UnknownVar {
                                name,
                                known: vars
                                    .iter()
                                    .map(|v| format!("{{{v}}}"))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            });
                        }
                    }
                }
                '}' => return Err(TemplateError::Unbalanced(at)),
                c => {
                    literal.push(c);
                    continue;
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    /// The text it was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the rendering depends on the time.
    pub fn is_time_dependent(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Year | Part::Month | Part::Day | Part::Hour))
    }

    /// A glob every rendering matches: each run of placeholders is a `*`.
    pub fn glob(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                _ if out.ends_with('*') => {}
                _ => out.push('*'),
            }
        }
        out
    }

    /// Renders the template; `var` supplies each `{name}`.
    pub fn render(&self, at: UtcHour, var: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            // Writing to a String cannot fail.
            let _ = match part {
                Part::Literal(s) => write!(out, "{s}"),
                Part::Year => write!(out, "{:04}", at.year),
                Part::Month => write!(out, "{:02}", at.month),
                Part::Day => write!(out, "{:02}", at.day),
                Part::Hour => write!(out, "{:02}", at.hour),
                Part::Var(name) => write!(out, "{}", var(name)),
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_of_times() {
        let hour = |text| crate::time::parse_rfc3339_millis(text).map(UtcHour::from_unix_millis);
        let want = |year, month, day, hour| {
            Some(UtcHour {
                year,
                month,
                day,
                hour,
            })
        };
        assert_eq!(hour("2026-11-25T19:44:28.711Z"), want(2026, 11, 25, 19));
        assert_eq!(hour("2019-06-19T00:18:31+00:00"), want(2019, 6, 19, 0));
        assert_eq!(
            hour("2019-06-19T00:18:31+02:00"),
            want(2019, 6, 18, 22),
            "an offset moves the hour and the day"
        );
        assert_eq!(hour("1969-12-31T23:59:59.999Z"), want(1969, 12, 31, 23));
    }

    const VARS: &[&str] = &["logGroup", "account"];

    #[test]
    fn parse_and_render() {
        let at = UtcHour::from_unix_millis(1_795_635_868_711);
        assert_eq!(
            at,
            UtcHour {
                year: 2026,
                month: 11,
                day: 25,
                hour: 19
            }
        );
        let var = |name: &str| match name {
            "logGroup" => "aws/lambda/f".to_owned(),
            _ => "123456789012".to_owned(),
        };
        let cases = [
            ("cwl-%Y.%m.%d", "cwl-2026.11.25"),
            (
                "{logGroup}/year=%Y/month=%m/day=%d/hour=%H/",
                "aws/lambda/f/year=2026/month=11/day=25/hour=19/",
            ),
            ("AWSLogs/{account}/", "AWSLogs/123456789012/"),
            ("100%%-{account}", "100%-123456789012"),
            ("plain", "plain"),
            ("", ""),
        ];
        for (source, want) in cases {
            let t = Template::parse(source, VARS).unwrap();
            assert_eq!(t.render(at, var), want, "{source}");
        }
        assert!(Template::parse("cwl-%Y", VARS).unwrap().is_time_dependent());
        assert!(
            !Template::parse("{account}", VARS)
                .unwrap()
                .is_time_dependent()
        );
    }

    #[test]
    fn parse_errors() {
        let cases = [
            (
                "cwl-%y",
                "unknown placeholder %y (use %Y, %m, %d, %H or %%)",
            ),
            ("cwl-%", "unknown placeholder % (use %Y, %m, %d, %H or %%)"),
            (
                "{logStream}/",
                "unknown placeholder {logStream} (known: {logGroup}, {account})",
            ),
            ("{logGroup", "unbalanced brace at byte 0"),
            ("a}b", "unbalanced brace at byte 1"),
            ("{a{b}", "unbalanced brace at byte 0"),
        ];
        for (source, want) in cases {
            assert_eq!(
                Template::parse(source, VARS).unwrap_err().to_string(),
                want,
                "{source}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = Template::parse(&s, VARS);
        }

        #[test]
        fn plain_text_renders_as_itself(s in "[^%{}]{0,40}") {
            let t = Template::parse(&s, VARS).unwrap();
            proptest::prop_assert_eq!(t.render(UtcHour::from_unix_millis(0), |_| String::new()), s);
        }

        #[test]
        fn hours_advance_one_at_a_time(millis in -4_000_000_000_000i64..8_000_000_000_000) {
            let a = UtcHour::from_unix_millis(millis);
            let b = UtcHour::from_unix_millis(millis + 3_600_000);
            proptest::prop_assert!((1..=12).contains(&a.month) && (1..=31).contains(&a.day) && a.hour < 24);
            proptest::prop_assert_eq!(b.hour, (a.hour + 1) % 24);
            if b.hour != 0 {
                proptest::prop_assert_eq!((b.year, b.month, b.day), (a.year, a.month, a.day));
            } else if b.day != 1 {
                proptest::prop_assert_eq!((b.year, b.month, b.day), (a.year, a.month, a.day + 1));
            } else if b.month != 1 {
                proptest::prop_assert_eq!((b.year, b.month), (a.year, a.month + 1));
            } else {
                proptest::prop_assert_eq!((b.year, a.month, a.day), (a.year + 1, 12, 31));
            }
        }
    }

    #[test]
    fn civil_dates() {
        let cases = [
            (0, (1970, 1, 1, 0)),
            (951_782_400_000, (2000, 2, 29, 0)),
            (1_709_251_199_000, (2024, 2, 29, 23)),
            (-1_000, (1969, 12, 31, 23)),
            (4_102_444_800_000, (2100, 1, 1, 0)),
        ];
        for (millis, (year, month, day, hour)) in cases {
            assert_eq!(
                UtcHour::from_unix_millis(millis),
                UtcHour {
                    year,
                    month,
                    day,
                    hour
                },
                "{millis}"
            );
        }
    }
}
