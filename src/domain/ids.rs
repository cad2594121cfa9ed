//! Organization and user ids as tessera takes them from outside (token claims, paths, the
//! `x-zitadel-orgid` header, request messages). ZITADEL's ids are 18-digit numbers; other
//! issuers use UUIDs or names. An id that is empty, longer than 200 bytes or holds a control
//! character is refused: it would become a Redis key, a log field and a metrics-free label of
//! the request, and none of those should carry a megabyte or a terminal escape.

pub const MAX_ID_BYTES: usize = 200;

pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_free_of_control_characters() {
        assert!(is_valid_id("69629023906488334"));
        assert!(is_valid_id("acme-ü"));
        assert!(is_valid_id(&"x".repeat(MAX_ID_BYTES)));
        assert!(!is_valid_id(&"x".repeat(MAX_ID_BYTES + 1)));
        assert!(!is_valid_id(""));
        for bad in ["a\tb", "a\nb", "a\u{7f}b", "a\u{85}b", "\u{1b}[31m"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
