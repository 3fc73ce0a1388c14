//! The messages' texts: plain text and HTML per kind and locale. Defaults
//! are compiled in; `email.templates_dir` overrides any of them with
//! `{dir}/{locale}/{kind}.txt` (first line `Subject: ...`, an empty line,
//! the body) and `{dir}/{locale}/{kind}.html`. A template that names a
//! placeholder its kind does not have is refused at load.

use std::collections::HashMap;
use std::path::Path;

use super::Locale;
use crate::config::EmailConfig;

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A verification link for a new (or changed) address.
    VerifyEmail,
    /// A notice to the old address that a change was requested.
    EmailChanged,
    PasswordReset,
    /// A notice that the password changed.
    PasswordChanged,
    /// A notice that a TOTP factor now guards logins.
    MfaEnabled,
    /// A notice that the TOTP factor was removed (by the user or an administrator).
    MfaDisabled,
    /// A notice that an identity provider was linked as a way in.
    IdentityLinked,
    /// `authgw email test`.
    Test,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::VerifyEmail,
        Kind::EmailChanged,
        Kind::PasswordReset,
        Kind::PasswordChanged,
        Kind::MfaEnabled,
        Kind::MfaDisabled,
        Kind::IdentityLinked,
        Kind::Test,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VerifyEmail => "verify_email",
            Kind::EmailChanged => "email_changed",
            Kind::PasswordReset => "password_reset",
            Kind::PasswordChanged => "password_changed",
            Kind::MfaEnabled => "mfa_enabled",
            Kind::MfaDisabled => "mfa_disabled",
            Kind::IdentityLinked => "identity_linked",
            Kind::Test => "test",
        }
    }

    /// The placeholders this kind's templates may use.
    pub fn placeholders(self) -> &'static [&'static str] {
        match self {
            Kind::VerifyEmail => &["product", "login", "link", "ttl", "email"],
            Kind::EmailChanged => &["product", "login", "email", "new_email"],
            Kind::PasswordReset => &["product", "login", "link", "ttl"],
            Kind::PasswordChanged | Kind::MfaEnabled | Kind::MfaDisabled => &["product", "login"],
            Kind::IdentityLinked => &["product", "login", "provider"],
            Kind::Test => &["product"],
        }
    }
}

macro_rules! defaults {
    ($($locale:literal),*) => {
        /// The built-in `(locale, kind, txt, html)` texts.
        const DEFAULTS: &[(&str, &str, &str, &str)] = &[
            $(
                defaults!(@one $locale, "verify_email"),
                defaults!(@one $locale, "email_changed"),
                defaults!(@one $locale, "password_reset"),
                defaults!(@one $locale, "password_changed"),
                defaults!(@one $locale, "mfa_enabled"),
                defaults!(@one $locale, "mfa_disabled"),
                defaults!(@one $locale, "identity_linked"),
                defaults!(@one $locale, "test"),
            )*
        ];
    };
    (@one $locale:literal, $kind:literal) => {
        (
            $locale,
            $kind,
            include_str!(concat!("templates/", $locale, "/", $kind, ".txt")),
            include_str!(concat!("templates/", $locale, "/", $kind, ".html")),
        )
    };
}

defaults!("en", "ru");

/// A piece of a parsed template.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Var(&'static str),
}

#[derive(Debug, Clone)]
struct Template {
    subject: Vec<Piece>,
    text: Vec<Piece>,
    html: Vec<Piece>,
}

/// Every kind in every locale, parsed and checked.
#[derive(Debug, Clone)]
pub struct Templates {
    map: HashMap<(Kind, Locale), Template>,
}

/// A message's texts, placeholders filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Templates {
    /// The defaults, with `email.templates_dir`'s files over them. The
    /// error names the file and what is wrong with it.
    pub fn load(config: &EmailConfig, base_dir: &Path) -> Result<Self, String> {
        let dir = config.templates_dir.as_ref().map(|d| base_dir.join(d));
        if let Some(dir) = &dir
            && !dir.is_dir()
        {
            return Err(format!("{} is not a directory", dir.display()));
        }
        let mut map = HashMap::new();
        for locale in Locale::ALL {
            for kind in Kind::ALL {
                let (_, _, txt, html) = DEFAULTS
                    .iter()
                    .find(|(l, k, _, _)| *l == locale.as_str() && *k == kind.as_str())
                    .ok_or_else(|| format!("no built-in {} template", kind.as_str()))?;
                let mut txt = (*txt).to_string();
                let mut html = (*html).to_string();
                let mut origin_txt = format!("built-in {}/{}.txt", locale.as_str(), kind.as_str());
                let mut origin_html =
                    format!("built-in {}/{}.html", locale.as_str(), kind.as_str());
                if let Some(dir) = &dir {
                    let base = dir.join(locale.as_str()).join(kind.as_str());
                    for (ext, slot, origin) in [
                        ("txt", &mut txt, &mut origin_txt),
                        ("html", &mut html, &mut origin_html),
                    ] {
                        let path = base.with_extension(ext);
                        match std::fs::read_to_string(&path) {
                            Ok(s) => {
                                *slot = s;
                                *origin = path.display().to_string();
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(format!("{}: {e}", path.display())),
                        }
                    }
                }
                let (subject, body) =
                    split_subject(&txt).map_err(|e| format!("{origin_txt}: {e}"))?;
                let template = Template {
                    subject: parse(subject, kind).map_err(|e| format!("{origin_txt}: {e}"))?,
                    text: parse(body, kind).map_err(|e| format!("{origin_txt}: {e}"))?,
                    html: parse(&html, kind).map_err(|e| format!("{origin_html}: {e}"))?,
                };
                map.insert((kind, locale), template);
            }
        }
        Ok(Self { map })
    }

    /// `kind` in `locale` with `vars` filled in (HTML-escaped in the HTML;
    /// control characters never reach the subject).
    pub fn render(&self, kind: Kind, locale: Locale, vars: &[(&str, &str)]) -> Rendered {
        let Some(t) = self.map.get(&(kind, locale)) else {
            return Rendered {
                subject: String::new(),
                text: String::new(),
                html: String::new(),
            };
        };
        let subject: String = fill(&t.subject, vars, false)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Rendered {
            subject: subject.trim().to_string(),
            text: fill(&t.text, vars, false),
            html: fill(&t.html, vars, true),
        }
    }
}

/// `Subject: ...`, an empty line, the body.
fn split_subject(txt: &str) -> Result<(&str, &str), String> {
    let txt = txt.strip_prefix('\u{feff}').unwrap_or(txt);
    let (first, rest) = txt.split_once('\n').unwrap_or((txt, ""));
    let subject = first
        .trim_end_matches('\r')
        .strip_prefix("Subject:")
        .ok_or("the first line must be \"Subject: ...\"")?
        .trim();
    if subject.is_empty() {
        return Err("the subject is empty".into());
    }
    let body = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
        .ok_or("an empty line must follow the subject")?;
    Ok((subject, body))
}

/// Splits a template into text and placeholders; `{{` and `}}` are
/// literal braces.
fn parse(src: &str, kind: Kind) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = src;
    while let Some(i) = rest.find(['{', '}']) {
        text.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            text.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err("a lone '}' (write '}}' for a brace)".into());
        }
        let end = tail
            .find('}')
            .ok_or("an unclosed '{' (write '{{' for a brace)")?;
        let name = &tail[1..end];
        let var = kind
            .placeholders()
            .iter()
            .find(|p| **p == name)
            .ok_or_else(|| {
                format!(
                    "unknown placeholder {{{name}}}; {} messages have {}",
                    kind.as_str(),
                    kind.placeholders()
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Var(var));
        rest = &tail[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn fill(pieces: &[Piece], vars: &[(&str, &str)], html: bool) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(name) => {
                let value = vars.iter().find(|(k, _)| k == name).map_or("", |(_, v)| *v);
                if html {
                    escape_html(value, &mut out);
                } else {
                    out.push_str(value);
                }
            }
        }
    }
    out
}

fn escape_html(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn defaults() -> Templates {
        Templates::load(&EmailConfig::default(), Path::new(".")).expect("built-in templates")
    }

    /// Every built-in template parses, uses only its kind's placeholders,
    /// and renders a subject, a text and an HTML body in both locales.
    #[test]
    fn built_in_templates_render() {
        let t = defaults();
        for locale in Locale::ALL {
            for kind in Kind::ALL {
                let r = t.render(
                    kind,
                    locale,
                    &[
                        ("product", "Cinema"),
                        ("login", "alice"),
                        ("link", "https://x.example/r?token=T0K3N"),
                        ("ttl", "30 minutes"),
                        ("email", "a@example.com"),
                        ("new_email", "b@example.com"),
                    ],
                );
                assert!(!r.subject.is_empty(), "{kind:?} {locale:?}");
                assert!(
                    !r.text.is_empty() && !r.html.is_empty(),
                    "{kind:?} {locale:?}"
                );
                if kind.placeholders().contains(&"link") {
                    assert!(
                        r.text.contains("token=T0K3N"),
                        "{kind:?} {locale:?} text lacks the link"
                    );
                    assert!(
                        r.html.contains("token=T0K3N"),
                        "{kind:?} {locale:?} html lacks the link"
                    );
                }
            }
        }
    }

    /// Values are escaped in HTML and kept verbatim in text.
    #[test]
    fn html_values_are_escaped() {
        let pieces = parse("<p>{login}</p> {{x}}", Kind::PasswordChanged).unwrap();
        assert_eq!(
            fill(&pieces, &[("login", "<b>&\"")], true),
            "<p>&lt;b&gt;&amp;&quot;</p> {x}"
        );
        assert_eq!(fill(&pieces, &[("login", "<b>")], false), "<p><b></p> {x}");
    }

    /// Unknown placeholders, stray braces and a missing subject line are
    /// refused naming the file.
    #[test]
    fn bad_overrides_are_refused_naming_the_file() {
        let dir = tempfile_dir();
        std::fs::create_dir_all(dir.join("ru")).unwrap();
        let config = EmailConfig {
            templates_dir: Some(dir.clone()),
            ..EmailConfig::default()
        };
        let write =
            |name: &str, body: &str| std::fs::write(dir.join("ru").join(name), body).unwrap();

        write("password_changed.txt", "Subject: hi {link}\n\nbody\n");
        let e = Templates::load(&config, Path::new("/")).unwrap_err();
        assert!(
            e.contains("password_changed.txt") && e.contains("{link}"),
            "{e}"
        );

        write("password_changed.txt", "no subject\n\nbody\n");
        let e = Templates::load(&config, Path::new("/")).unwrap_err();
        assert!(e.contains("Subject:"), "{e}");

        write("password_changed.txt", "Subject: ok\n\nbody {login\n");
        let e = Templates::load(&config, Path::new("/")).unwrap_err();
        assert!(e.contains("unclosed"), "{e}");

        write(
            "password_changed.txt",
            "Subject: Пароль {product}\n\nПривет, {login}\n",
        );
        let t = Templates::load(&config, Path::new("/")).unwrap();
        let r = t.render(
            Kind::PasswordChanged,
            Locale::Ru,
            &[("product", "Кино"), ("login", "bob")],
        );
        assert_eq!(r.subject, "Пароль Кино");
        assert_eq!(r.text, "Привет, bob\n");
        // English still uses the built-in text.
        let en = t.render(
            Kind::PasswordChanged,
            Locale::En,
            &[("product", "Кино"), ("login", "bob")],
        );
        assert_ne!(en.text, "Привет, bob\n");
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("authgw-templates-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
