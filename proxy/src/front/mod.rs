//! Protocol fronts that are not served by hyper: HTTP/3.

pub mod h3_body;
pub mod h3_io;
pub mod http3;
