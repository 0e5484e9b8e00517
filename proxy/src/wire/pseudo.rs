//! Pseudo-header field names and where they may stand (RFC 9113 §8.3,
//! RFC 9114 §4.3): each at most once, all before the regular fields, none
//! of a response's in a request, none in a trailer section. Shared by the
//! QPACK and HPACK readers (`qpack`, `hpack`), which find the names.

/// A pseudo-header field a request or response may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pseudo {
    Authority,
    Path,
    Method,
    Scheme,
    Status,
    Protocol,
    /// A name that starts with `:` but is none of the above.
    Unknown,
}

impl Pseudo {
    pub fn as_str(self) -> &'static str {
        match self {
            Pseudo::Authority => ":authority",
            Pseudo::Path => ":path",
            Pseudo::Method => ":method",
            Pseudo::Scheme => ":scheme",
            Pseudo::Status => ":status",
            Pseudo::Protocol => ":protocol",
            Pseudo::Unknown => "an unknown pseudo-header",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Pseudo::Authority => 1,
            Pseudo::Path => 2,
            Pseudo::Method => 4,
            Pseudo::Scheme => 8,
            Pseudo::Status => 16,
            Pseudo::Protocol => 32,
            Pseudo::Unknown => 64,
        }
    }
}

/// One field line's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Pseudo(Pseudo),
    Regular,
}

/// What makes a field section malformed (RFC 9114 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misplaced {
    /// The same pseudo-header twice.
    Repeated(Pseudo),
    /// A pseudo-header after a regular field.
    AfterRegular(Pseudo),
    /// Any pseudo-header in a trailer section.
    InTrailers(Pseudo),
    /// A response's pseudo-header in a request, or one that does not exist.
    NotForRequests(Pseudo),
}

impl Misplaced {
    /// The reason given in the 400's Proxy-Status details and the log.
    pub fn reason(self) -> &'static str {
        match self {
            Misplaced::Repeated(_) => "a pseudo-header field appears twice",
            Misplaced::AfterRegular(_) => "a pseudo-header field follows a regular field",
            Misplaced::InTrailers(_) => "a trailer section carries a pseudo-header field",
            Misplaced::NotForRequests(_) => "a request carries a pseudo-header field it may not",
        }
    }
}

/// Judge a request's header section (`trailers = false`) or a trailer
/// section (`trailers = true`) by its field names.
pub fn check(names: &[Name], trailers: bool) -> Result<(), Misplaced> {
    let mut seen = 0u8;
    let mut regular = false;
    for name in names {
        let p = match name {
            Name::Regular => {
                regular = true;
                continue;
            }
            Name::Pseudo(p) => *p,
        };
        if trailers {
            return Err(Misplaced::InTrailers(p));
        }
        if matches!(p, Pseudo::Status | Pseudo::Unknown) {
            return Err(Misplaced::NotForRequests(p));
        }
        if regular {
            return Err(Misplaced::AfterRegular(p));
        }
        if seen & p.bit() != 0 {
            return Err(Misplaced::Repeated(p));
        }
        seen |= p.bit();
    }
    Ok(())
}

/// A field name as bytes: which pseudo-header, or a regular field.
pub fn name_of(name: &[u8]) -> Name {
    if name.first() != Some(&b':') {
        return Name::Regular;
    }
    Name::Pseudo(match name {
        b":authority" => Pseudo::Authority,
        b":path" => Pseudo::Path,
        b":method" => Pseudo::Method,
        b":scheme" => Pseudo::Scheme,
        b":status" => Pseudo::Status,
        b":protocol" => Pseudo::Protocol,
        _ => Pseudo::Unknown,
    })
}
