use super::*;

const CINEMA: &str = include_str!("../../examples/cinema.json");

fn cinema() -> Config {
    match Config::from_json(CINEMA) {
        Ok(c) => c,
        Err(e) => panic!("examples/cinema.json: {e}"),
    }
}

fn roles(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn as_user<'a>(roles: &'a [String]) -> Option<Caller<'a>> {
    Some(Caller {
        roles,
        is_admin: false,
        amr: &[],
    })
}

fn amr(methods: &[&str]) -> Vec<String> {
    methods.iter().map(|s| s.to_string()).collect()
}

/// The step-up denial of an `mfa` rule.
fn mfa_required() -> Verdict {
    Verdict::Deny {
        status: 401,
        reason: MFA_REQUIRED_REASON.into(),
        code: Some(MFA_REQUIRED),
    }
}

fn status(v: &Verdict) -> Option<u16> {
    match v {
        Verdict::Allow => None,
        Verdict::Deny { status, .. } => Some(*status),
    }
}

#[test]
fn premium_needs_subscriber() {
    let c = cinema();
    let sub = roles(&["subscriber"]);
    let trial = roles(&["trial"]);
    assert_eq!(
        c.decide("GET", "/films/premium/42", as_user(&sub)),
        Verdict::Allow
    );
    let v = c.decide("GET", "/films/premium/42", as_user(&trial));
    assert_eq!(
        v,
        Verdict::Deny {
            status: 402,
            reason: "requires one of the roles: subscriber".into(),
            code: None
        }
    );
}

#[test]
fn eighteen_plus_needs_adult() {
    let c = cinema();
    let adult = roles(&["adult", "subscriber"]);
    let minor = roles(&["subscriber"]);
    assert_eq!(
        c.decide("GET", "/films/18plus", as_user(&adult)),
        Verdict::Allow
    );
    assert_eq!(
        c.decide("GET", "/films/18plus/7", as_user(&minor)),
        Verdict::Deny {
            status: 403,
            reason: "requires the roles: adult".into(),
            code: None
        }
    );
}

#[test]
fn trial_users_reach_trial_only() {
    let c = cinema();
    let trial = roles(&["trial"]);
    assert_eq!(
        c.decide("GET", "/films/trial/1", as_user(&trial)),
        Verdict::Allow
    );
    assert_eq!(
        status(&c.decide("GET", "/films/premium", as_user(&trial))),
        Some(402)
    );
    assert_eq!(
        status(&c.decide("GET", "/films/18plus", as_user(&trial))),
        Some(403)
    );
}

#[test]
fn anonymous_gets_401_where_roles_are_required_and_open_rules_allow_it() {
    let c = cinema();
    assert_eq!(status(&c.decide("GET", "/films/trial", None)), Some(401));
    assert_eq!(c.decide("GET", "/films/catalog", None), Verdict::Allow);
}

#[test]
fn prefix_matches_on_segment_boundaries_only() {
    let c = cinema();
    let sub = roles(&["subscriber"]);
    // `/films/premiumx` is not under `/films/premium`: the open `/films` rule decides.
    assert_eq!(
        c.decide("GET", "/films/premiumx", as_user(&[])),
        Verdict::Allow
    );
    assert_eq!(
        c.decide("GET", "/films/premium/", as_user(&sub)),
        Verdict::Allow
    );
    // `/filmsx` matches nothing: the default denies.
    assert_eq!(status(&c.decide("GET", "/filmsx", None)), Some(403));
    // Nor does a path shorter than a prefix.
    assert_eq!(status(&c.decide("GET", "/film", None)), Some(403));
}

#[test]
fn root_prefix_matches_every_path() {
    let c = match Config::from_json(r#"{"rules": [{"path": "/", "any_of": ["staff"]}]}"#) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    for path in ["/", "/a", "/films/premium/1"] {
        assert_eq!(status(&c.decide("GET", path, None)), Some(401), "{path}");
    }
}

#[test]
fn methods_restrict_a_rule_and_unmatched_requests_fall_to_the_default() {
    let c = cinema();
    let trial = roles(&["trial"]);
    assert_eq!(
        c.decide("POST", "/films/7/reviews", as_user(&trial)),
        Verdict::Allow
    );
    assert_eq!(
        status(&c.decide("POST", "/films/7/reviews", as_user(&[]))),
        Some(403)
    );
    // DELETE matches neither the reviews rule nor the GET/HEAD /films rule.
    assert_eq!(
        c.decide("DELETE", "/films/7", as_user(&trial)),
        Verdict::Deny {
            status: 403,
            reason: "no rule allows this request".into(),
            code: None
        }
    );
}

#[test]
fn admin_only_rules_need_the_admin_flag_not_a_role() {
    let c = cinema();
    let admin_role = roles(&["admin"]);
    let otp = amr(&["pwd", "otp"]);
    let with_role = Some(Caller {
        roles: &admin_role,
        is_admin: false,
        amr: &otp,
    });
    assert_eq!(status(&c.decide("GET", "/admin/x", with_role)), Some(403));
    let admin = Some(Caller {
        roles: &[],
        is_admin: true,
        amr: &otp,
    });
    assert_eq!(c.decide("GET", "/admin/x", admin), Verdict::Allow);
}

#[test]
fn default_allow_lets_unmatched_requests_through() {
    let c = Config::from_json(r#"{"rules": [], "default": "allow"}"#);
    assert!(matches!(c, Ok(ref c) if c.decide("GET", "/x", None) == Verdict::Allow));
    let empty = Config::from_json("{}");
    assert!(matches!(empty, Ok(ref c) if status(&c.decide("GET", "/x", None)) == Some(403)));
}

#[test]
fn globs_single_star_stays_in_a_segment_double_star_crosses() {
    let single = parse_glob("/films/*/reviews");
    assert!(glob_matches(&single, "/films/7/reviews"));
    assert!(!glob_matches(&single, "/films/7/8/reviews"));
    assert!(!glob_matches(&single, "/films/7/reviewsx"));
    let double = parse_glob("/films/**/reviews");
    assert!(glob_matches(&double, "/films/7/8/reviews"));
    let one = parse_glob("/v?/x");
    assert!(glob_matches(&one, "/v1/x"));
    assert!(!glob_matches(&one, "/v//x"));
    assert!(glob_matches(&parse_glob("/static/**"), "/static/"));
    assert!(glob_matches(&parse_glob("/static/**"), "/static/a/b.css"));
}

#[test]
fn invalid_configs_name_the_rule_and_key() {
    let cases = [
        (
            r#"{"rules": [{"path": "/a", "glob": "/b"}]}"#,
            "rules[0]: set either",
        ),
        (
            r#"{"rules": [{"any_of": ["x"]}]}"#,
            "rules[0]: missing `path`",
        ),
        (
            r#"{"rules": [{"path": "/a"}, {"path": "a"}]}"#,
            "rules[1]: `path` \"a\"",
        ),
        (
            r#"{"rules": [{"path": "/a", "deny_status": 200}]}"#,
            "deny_status 200",
        ),
        (
            r#"{"rules": [{"path": "/a", "methods": []}]}"#,
            "`methods` is empty",
        ),
        (
            r#"{"rules": [{"path": "/a", "roles": ["x"]}]}"#,
            "unknown field `roles`",
        ),
        (r#"{"default": "maybe"}"#, "unknown variant `maybe`"),
        ("not json", "role-rules config:"),
    ];
    for (json, want) in cases {
        match Config::from_json(json) {
            Ok(_) => panic!("{json} was accepted"),
            Err(e) => assert!(e.contains(want), "{json}: {e:?} lacks {want:?}"),
        }
    }
}

const ADMIN_MTLS: &str = include_str!("../../examples/admin-mtls.json");

fn admin_mtls() -> Config {
    match Config::from_json(ADMIN_MTLS) {
        Ok(c) => c,
        Err(e) => panic!("examples/admin-mtls.json: {e}"),
    }
}

fn admin() -> Option<Caller<'static>> {
    Some(Caller {
        roles: &[],
        is_admin: true,
        amr: &[],
    })
}

/// A rule with `client_cert_subject` allows only a request that came with
/// a verified certificate of that subject, and still asks for the rest
/// (the admin flag); without one, or with another, it denies with 403 and
/// a reason that does not tell the allowed subjects.
#[test]
fn client_cert_subject_is_demanded_before_the_identity() {
    let c = admin_mtls();
    let ops = Some("CN=ops,O=cinema");
    assert_eq!(
        c.decide_with_cert("GET", "/admin/users", admin(), ops),
        Verdict::Allow
    );
    assert_eq!(
        c.decide("GET", "/admin/users", admin()),
        Verdict::Deny {
            status: 403,
            reason: CLIENT_CERT_REQUIRED.into(),
            code: None
        }
    );
    let other = c.decide_with_cert("GET", "/admin/users", admin(), Some("CN=intern,O=cinema"));
    assert_eq!(
        other,
        Verdict::Deny {
            status: 403,
            reason: CLIENT_CERT_NOT_ALLOWED.into(),
            code: None
        }
    );
    // Exact comparison: no case folding, no whitespace games.
    for near in ["cn=ops,o=cinema", "CN=ops, O=cinema", "CN=ops,O=cinema "] {
        assert_eq!(
            status(&c.decide_with_cert("GET", "/admin", admin(), Some(near))),
            Some(403),
            "{near}"
        );
    }
    let user = roles(&["subscriber"]);
    assert_eq!(
        c.decide_with_cert("GET", "/admin", as_user(&user), ops),
        Verdict::Deny {
            status: 403,
            reason: "administrators only".into(),
            code: None
        }
    );
    assert_eq!(
        status(&c.decide_with_cert("GET", "/admin", None, ops)),
        Some(401)
    );
    // No certificate: 403 before the identity is looked at, anonymous too.
    assert_eq!(status(&c.decide("GET", "/admin", None)), Some(403));
}

/// `client_cert: true` accepts any verified certificate, and alone (no role
/// requirement) needs no token; rules without it do not look at the
/// certificate at all.
#[test]
fn client_cert_true_accepts_any_verified_certificate() {
    let c = admin_mtls();
    assert_eq!(
        c.decide_with_cert("GET", "/ops/status", None, Some("CN=probe")),
        Verdict::Allow
    );
    assert_eq!(
        c.decide("GET", "/ops/status", None),
        Verdict::Deny {
            status: 403,
            reason: CLIENT_CERT_REQUIRED.into(),
            code: None
        }
    );
    assert_eq!(c.decide("GET", "/films/1", None), Verdict::Allow);
    assert_eq!(
        c.decide_with_cert("GET", "/films/1", None, Some("CN=probe")),
        Verdict::Allow
    );
}

/// A rule's `deny_status` applies to a missing certificate too, and a list
/// of subjects allows any of them.
#[test]
fn client_cert_subject_lists_and_deny_status() {
    let c = Config::from_json(
        r#"{"rules": [{"path": "/ops", "client_cert_subject": ["CN=a", "CN=b"], "deny_status": 421}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for ok in ["CN=a", "CN=b"] {
        assert_eq!(
            c.decide_with_cert("POST", "/ops/x", None, Some(ok)),
            Verdict::Allow
        );
    }
    assert_eq!(
        status(&c.decide_with_cert("POST", "/ops/x", None, Some("CN=c"))),
        Some(421)
    );
    assert_eq!(status(&c.decide("POST", "/ops/x", None)), Some(421));
}

/// The plugin declares `needs.client-cert` only when a rule reads the
/// certificate: the cinema rules do not, so their routes pay nothing.
#[test]
fn reads_client_cert_only_when_a_rule_asks() {
    assert!(admin_mtls().reads_client_cert());
    assert!(!cinema().reads_client_cert());
}

/// Contradictory or empty certificate keys are refused, naming the rule.
#[test]
fn invalid_client_cert_keys_are_refused() {
    for (json, want) in [
        (
            r#"{"rules": [{"path": "/a", "client_cert": false, "client_cert_subject": "CN=a"}]}"#,
            "rules[0]: `client_cert_subject` with `client_cert`: false",
        ),
        (
            r#"{"rules": [{"path": "/a", "client_cert_subject": []}]}"#,
            "rules[0]: `client_cert_subject` is empty",
        ),
        (
            r#"{"rules": [{"path": "/a", "client_cert_subject": " "}]}"#,
            "rules[0]: `client_cert_subject` \" \" is blank",
        ),
        (
            r#"{"rules": [{"path": "/a", "client_cert_subject": 7}]}"#,
            "role-rules config:",
        ),
    ] {
        match Config::from_json(json) {
            Ok(_) => panic!("{json} must be refused"),
            Err(e) => assert!(e.contains(want), "{json}: {e}"),
        }
    }
}

/// The cinema's `/admin`: administrators with a second factor. A TOTP
/// (`otp`) or recovery-code (`rcode`) session passes; a password-only one
/// gets 401 `mfa_required` with the step-up reason.
#[test]
fn mfa_admits_a_second_factor_and_asks_a_password_session_to_step_up() {
    let c = cinema();
    for methods in [&["pwd", "otp"][..], &["pwd", "rcode"], &["otp"]] {
        let amr = amr(methods);
        let admin = Some(Caller {
            roles: &[],
            is_admin: true,
            amr: &amr,
        });
        assert_eq!(
            c.decide("GET", "/admin/users", admin),
            Verdict::Allow,
            "{methods:?}"
        );
    }
    // A password, an unknown method, or a token that does not say.
    for methods in [&["pwd"][..], &["fed"], &[], &["OTP"], &["pwd", "mfa"]] {
        let amr = amr(methods);
        let admin = Some(Caller {
            roles: &[],
            is_admin: true,
            amr: &amr,
        });
        assert_eq!(
            c.decide("GET", "/admin/users", admin),
            mfa_required(),
            "{methods:?}"
        );
    }
    assert_eq!(
        MFA_REQUIRED_REASON,
        "this route requires a second factor: sign in again with your authenticator app"
    );
}

/// The order of the checks: the certificate, then the identity (anonymous:
/// 401 `authentication required`, no code), then the roles and the admin
/// flag (403: stepping up would not help), and the second factor last.
#[test]
fn mfa_comes_after_the_certificate_the_identity_and_the_roles() {
    let c = match Config::from_json(
        r#"{"rules": [
            {"path": "/admin", "admin_only": true, "mfa": true, "client_cert_subject": "CN=ops,O=cinema"},
            {"path": "/vault", "any_of": ["keeper"], "mfa": true, "deny_status": 404}
        ]}"#,
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let ops = Some("CN=ops,O=cinema");
    let pwd = amr(&["pwd"]);
    let otp = amr(&["pwd", "otp"]);
    let admin = |amr| {
        Some(Caller {
            roles: &[],
            is_admin: true,
            amr,
        })
    };
    // No certificate: the certificate's 403, whatever the session.
    assert_eq!(
        c.decide_with_cert("GET", "/admin", admin(&pwd), None),
        Verdict::Deny {
            status: 403,
            reason: CLIENT_CERT_REQUIRED.into(),
            code: None
        }
    );
    // Anonymous: 401 without a code (sign in, not step up).
    assert_eq!(
        c.decide_with_cert("GET", "/admin", None, ops),
        Verdict::Deny {
            status: 401,
            reason: "authentication required".into(),
            code: None
        }
    );
    // Not an administrator, with or without a second factor: 403.
    let none = roles(&[]);
    for amr in [&pwd, &otp] {
        let user = Some(Caller {
            roles: &none,
            is_admin: false,
            amr,
        });
        assert_eq!(
            c.decide_with_cert("GET", "/admin", user, ops),
            Verdict::Deny {
                status: 403,
                reason: "administrators only".into(),
                code: None
            }
        );
    }
    assert_eq!(
        c.decide_with_cert("GET", "/admin", admin(&pwd), ops),
        mfa_required()
    );
    assert_eq!(
        c.decide_with_cert("GET", "/admin", admin(&otp), ops),
        Verdict::Allow
    );

    // A role rule: its own deny_status for the roles; the step-up is 401
    // whatever deny_status says.
    let keeper = roles(&["keeper"]);
    let caller = |roles, amr| {
        Some(Caller {
            roles,
            is_admin: false,
            amr,
        })
    };
    assert_eq!(
        status(&c.decide("GET", "/vault/1", caller(&none, &otp))),
        Some(404)
    );
    assert_eq!(
        c.decide("GET", "/vault/1", caller(&keeper, &pwd)),
        mfa_required()
    );
    assert_eq!(
        c.decide("GET", "/vault/1", caller(&keeper, &otp)),
        Verdict::Allow
    );
}

/// `mfa` alone is an identity requirement: anonymous callers get 401
/// `authentication required`; any signed-in caller with a second factor
/// passes, one without is asked to step up. `"mfa": false` is the same as
/// no key.
#[test]
fn mfa_alone_requires_a_signed_in_caller_with_a_second_factor() {
    let c = match Config::from_json(
        r#"{"rules": [{"path": "/account/security", "mfa": true}, {"path": "/films", "mfa": false}]}"#,
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        status(&c.decide("GET", "/account/security", None)),
        Some(401)
    );
    assert!(matches!(
        c.decide("GET", "/account/security", None),
        Verdict::Deny { code: None, .. }
    ));
    let none = roles(&[]);
    let (pwd, rcode) = (amr(&["pwd"]), amr(&["pwd", "rcode"]));
    let user = |amr| {
        Some(Caller {
            roles: &none,
            is_admin: false,
            amr,
        })
    };
    assert_eq!(
        c.decide("GET", "/account/security", user(&pwd)),
        mfa_required()
    );
    assert_eq!(
        c.decide("GET", "/account/security", user(&rcode)),
        Verdict::Allow
    );
    assert_eq!(c.decide("GET", "/films/1", None), Verdict::Allow);
}

/// The plugin declares `needs.amr` only when a rule has `mfa`: the cinema
/// rules do (for `/admin`), the admin-mtls rules do not.
#[test]
fn reads_amr_only_when_a_rule_asks_for_a_second_factor() {
    assert!(cinema().reads_amr());
    assert!(!admin_mtls().reads_amr());
    let off = Config::from_json(r#"{"rules": [{"path": "/a", "mfa": false}]}"#);
    assert!(matches!(off, Ok(ref c) if !c.reads_amr()));
}

/// `mfa` must be a boolean; the error names the key.
#[test]
fn mfa_must_be_a_boolean() {
    for json in [
        r#"{"rules": [{"path": "/a", "mfa": "yes"}]}"#,
        r#"{"rules": [{"path": "/a", "mfa": 1}]}"#,
    ] {
        match Config::from_json(json) {
            Ok(_) => panic!("{json} must be refused"),
            Err(e) => assert!(e.contains("role-rules config:"), "{json}: {e}"),
        }
    }
    let typo = Config::from_json(r#"{"rules": [{"path": "/a", "mfa_required": true}]}"#);
    assert!(matches!(typo, Err(ref e) if e.contains("unknown field `mfa_required`")));
}
