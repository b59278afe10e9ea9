//! Unit tests of vendored Pingora code that stand alone, run here because the vendored
//! crates' own tests are not part of this package's suite.

#[path = "../vendor/pingora-core/src/protocols/l4/write_buffer.rs"]
#[allow(dead_code)]
mod write_buffer;

/// `ResponseHeader::clone_keeping_room` (vendored pingora-http), the copy a hit's header
/// starts from: the same status, version, reason phrase and fields, in the same order with
/// every value of a repeated field, as much room as the original, and a header with a map
/// of name cases copied with its cases.
#[test]
fn a_copy_keeping_room_is_the_same_header() {
    use pingora_http::ResponseHeader;

    fn fields(h: &ResponseHeader) -> Vec<(String, String)> {
        h.headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    let mut plain = ResponseHeader::build_no_case(203, Some(16)).unwrap();
    for (name, value) in [
        ("content-type", "text/plain"),
        ("set-cookie", "a=1"),
        ("x-origin", "yes"),
        ("set-cookie", "b=2"),
    ] {
        plain.append_header(name, value).unwrap();
    }
    plain.set_reason_phrase(Some("Fine")).unwrap();
    let copy = plain.clone_keeping_room();
    assert_eq!(fields(&copy), fields(&plain));
    assert_eq!(
        (copy.status, copy.version, copy.get_reason_phrase()),
        (plain.status, plain.version, Some("Fine"))
    );
    assert!(!copy.has_case());
    assert!(copy.headers.capacity() >= 16);

    let mut cased = ResponseHeader::build(200, None).unwrap();
    cased.append_header("X-Mixed-Case", "1").unwrap();
    let copy = cased.clone_keeping_room();
    assert!(copy.has_case(), "the map of name cases is kept");
    assert_eq!(fields(&copy), fields(&cased));
}
