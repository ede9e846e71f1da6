//! What the HTTP side reads from a request: the session id in the path
//! (`parse_session_id`, the one decoder), query parameters and their
//! percent-decoding, the `Range` header, segment file names, and bearer /
//! signed tokens (`auth`). None of it panics on any input, and what is
//! encoded decodes back: a session id percent-encoded any way is the same
//! id, a query value survives `percent_encode`, a token signed for a
//! session is accepted for that session and role until it expires.
#![no_main]

use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use liveslice_server::auth::{bearer, sign, Access, Auth, AuthError};
use liveslice_server::http::{
    numbered, percent_decode, percent_encode, range_ask, raw_session_segment, url_params, RangeAsk,
};
use liveslice_server::ids::{parse_session_id, validate_session_id};

#[derive(Arbitrary, Debug)]
struct Input {
    path: String,
    query: String,
    value: String,
    range: Vec<u8>,
    if_range: bool,
    len: u64,
    number: u64,
    /// Which bytes of the id to percent-encode, and in which case.
    encode_mask: u64,
    lower_hex: bool,
    token: String,
    static_tokens: Vec<String>,
    secret: Option<String>,
    publish: bool,
    expiry: u64,
    now: u64,
    other_session: String,
}

const SECRET: &str = "0123456789abcdef-fuzz";

fn encode_some(id: &str, mask: u64, lower: bool) -> String {
    let mut out = String::new();
    for (i, b) in id.bytes().enumerate() {
        if mask >> (i % 64) & 1 == 1 {
            if lower {
                out.push_str(&format!("%{b:02x}"));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(b as char);
        }
    }
    out
}

fuzz_target!(|i: Input| {
    // Session ids: whatever decodes is valid, is its own decoding, and is
    // the same id however it was encoded.
    if let Some(raw) = raw_session_segment(&i.path) {
        assert!(i.path.contains(raw));
        let _ = parse_session_id(raw);
    }
    match parse_session_id(&i.path) {
        Ok(id) => {
            assert!(validate_session_id(&id).is_ok());
            assert_eq!(parse_session_id(&id).as_deref(), Ok(id.as_str()));
            let enc = encode_some(&id, i.encode_mask, i.lower_hex);
            assert_eq!(parse_session_id(&enc).as_deref(), Ok(id.as_str()), "{enc}");
            // Nothing in a valid id needs encoding in a URL.
            assert_eq!(percent_encode(&id), id);
        }
        Err(e) => assert!(e.contains("session_id"), "{e}"),
    }

    // Query strings.
    for (k, v) in url_params(&i.query) {
        let _ = (k.len(), v.len());
    }
    let _ = percent_decode(&i.query);
    let enc = percent_encode(&i.value);
    assert_eq!(percent_decode(&enc).as_deref(), Some(i.value.as_str()));
    let q = format!("a=1&token={enc}&b");
    let token: Vec<_> = url_params(&q).filter(|(k, _)| k == "token").collect();
    assert_eq!(token, [("token".to_string(), i.value.clone())]);

    // Range: a part lies inside the body.
    if let Ok(v) = HeaderValue::from_bytes(&i.range) {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v);
        if i.if_range {
            h.insert(header::IF_RANGE, HeaderValue::from_static("\"x\""));
        }
        match range_ask(&h, i.len) {
            RangeAsk::Part(a, b) => assert!(a <= b && b < i.len, "{a}-{b} of {}", i.len),
            RangeAsk::Unsatisfiable => assert!(!i.if_range),
            RangeAsk::Whole => {}
        }
    }

    // Segment names.
    assert_eq!(
        numbered(&format!("seg-{}.m4s", i.number), "seg-", ".m4s"),
        Some(i.number)
    );
    if let Some(n) = numbered(&i.path, "seg-", ".ts") {
        assert!(i.path.ends_with(&format!("{n}.ts")));
    }

    // Tokens.
    if let Some(t) = bearer(&i.token) {
        assert!(i.token.contains(t));
    }
    if !i.token.trim().is_empty() {
        assert_eq!(bearer(&format!("Bearer {}", i.token)), Some(i.token.trim()));
    }
    if let Ok(Some(auth)) = Auth::new(&i.static_tokens, i.secret.as_deref()) {
        let _ = auth.check(Some(&i.token), &i.other_session, Access::Play, i.now);
    }
    let auth = Auth::new(&[], Some(SECRET))
        .expect("a valid secret")
        .expect("auth on");
    let _ = auth.check(Some(&i.token), "cam1", Access::Publish, i.now);
    let access = if i.publish {
        Access::Publish
    } else {
        Access::Play
    };
    let other = if i.publish {
        Access::Play
    } else {
        Access::Publish
    };
    // A token is signed for the session as given (encoded or not); it is
    // checked against the decoded id.
    let raw_session = encode_some(&i.path, i.encode_mask, i.lower_hex);
    if let Ok(id) = parse_session_id(&raw_session) {
        let t = sign(SECRET, access, &raw_session, i.expiry);
        let got = auth.check(Some(&t), &id, access, i.now);
        if i.expiry >= i.now {
            assert_eq!(got, Ok(()), "{t}");
            assert_eq!(
                auth.check(Some(&t), &id, other, i.now),
                Err(AuthError::Forbidden)
            );
            // Another session (its renditions, `ID~NAME`, share its
            // tokens) is refused.
            let other_session = parse_session_id(&i.other_session)
                .is_ok_and(|o| liveslice_server::ids::session_of(&o) != id);
            if other_session {
                assert_eq!(
                    auth.check(Some(&t), &i.other_session, access, i.now),
                    Err(AuthError::Forbidden)
                );
            }
        } else {
            assert_eq!(got, Err(AuthError::Invalid("expired")));
        }
        // Another secret's signature is refused.
        let forged = sign("another-secret-of-16+", access, &raw_session, i.expiry);
        assert_eq!(
            auth.check(Some(&forged), &id, access, i.now),
            Err(AuthError::Invalid("bad signature"))
        );
    }
});
