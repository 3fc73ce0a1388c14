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
    })
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
            reason: "requires one of the roles: subscriber".into()
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
            reason: "requires the roles: adult".into()
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
            reason: "no rule allows this request".into()
        }
    );
}

#[test]
fn admin_only_rules_need_the_admin_flag_not_a_role() {
    let c = cinema();
    let admin_role = roles(&["admin"]);
    assert_eq!(
        status(&c.decide("GET", "/admin/x", as_user(&admin_role))),
        Some(403)
    );
    let admin = Some(Caller {
        roles: &[],
        is_admin: true,
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
            reason: CLIENT_CERT_REQUIRED.into()
        }
    );
    let other = c.decide_with_cert("GET", "/admin/users", admin(), Some("CN=intern,O=cinema"));
    assert_eq!(
        other,
        Verdict::Deny {
            status: 403,
            reason: CLIENT_CERT_NOT_ALLOWED.into()
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
            reason: "administrators only".into()
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
            reason: CLIENT_CERT_REQUIRED.into()
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
