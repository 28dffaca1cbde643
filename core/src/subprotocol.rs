//! The subprotocol rule (D48, docs/protocol.md "Protocol v2"): what a 101's
//! `Sec-WebSocket-Protocol` may select, given what the upgrade offered.
//!
//! `subprotocol` auth offers `access_token.<jwt>`, the v2 entries of `Config::v2`, then the
//! bare `access_token`; `query` auth offers nothing. A server may select only an entry that was
//! offered, and never the one carrying the token; when nothing was offered it must select
//! nothing. A v2 entry switches the socket to that protocol; anything else breaking the rule is
//! terminal (`Failed { subprotocol }`).

use crate::wire::{Encoding, Protocol};

/// The protocol the socket speaks when the 101 selected `selected`, after an upgrade that
/// offered subprotocols (`offered`: `AuthMode::Subprotocol`) with the v2 encodings `v2`.
/// `None`: the selection breaks the rule, and the connection fails for good.
pub(crate) fn agreed(offered: bool, v2: &[Encoding], selected: Option<&str>) -> Option<Protocol> {
    let Some(selected) = selected else {
        // Kaiku with only the token entry offered connects but selects nothing: strict
        // clients fail there, and so do we when we offered something.
        return (!offered).then_some(Protocol::V1);
    };
    if !offered {
        // Nothing was offered (query auth): a v2 entry above all must not switch the
        // encoding of a socket that never asked for it.
        return None;
    }
    if selected == "access_token" {
        return Some(Protocol::V1);
    }
    Protocol::from_subprotocol(selected).filter(|p| v2.contains(&p.encoding))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{V2_JSON, V2_MSGPACK};

    const BOTH: &[Encoding] = &[Encoding::Msgpack, Encoding::Json];

    #[test]
    fn with_subprotocol_auth_an_offered_entry_is_agreed() {
        assert_eq!(agreed(true, BOTH, Some("access_token")), Some(Protocol::V1));
        assert_eq!(
            agreed(true, BOTH, Some(V2_MSGPACK)),
            Some(Protocol::V2_MSGPACK)
        );
        assert_eq!(agreed(true, BOTH, Some(V2_JSON)), Some(Protocol::V2_JSON));
    }

    #[test]
    fn with_subprotocol_auth_nothing_or_an_entry_not_offered_is_refused() {
        assert_eq!(agreed(true, BOTH, None), None);
        assert_eq!(agreed(true, BOTH, Some("something-else")), None);
        assert_eq!(agreed(true, BOTH, Some("access_token.jwt")), None);
        // A v2 encoding the config did not offer.
        assert_eq!(agreed(true, &[Encoding::Json], Some(V2_MSGPACK)), None);
        assert_eq!(agreed(true, &[], Some(V2_JSON)), None);
    }

    #[test]
    fn with_query_auth_only_no_subprotocol_is_agreed() {
        assert_eq!(agreed(false, BOTH, None), Some(Protocol::V1));
        assert_eq!(agreed(false, BOTH, Some("access_token")), None);
        // Issue 18: a v2 entry never offered switched the client to MessagePack.
        assert_eq!(agreed(false, BOTH, Some(V2_MSGPACK)), None);
        assert_eq!(agreed(false, BOTH, Some(V2_JSON)), None);
    }
}
