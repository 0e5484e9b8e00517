//! The protocol-agnostic core. Fronts hand it a [`request::RequestHead`]
//! and a body; [`serve::serve`] is the data path; [`route`] decides what a
//! request is; [`limits`] counts what each client holds; [`respond`] is the one map from errors to answers; a
//! [`reply::Reply`] goes back. Nothing here knows hyper, h2, h3 or quinn.

mod chain;
pub mod context;
pub mod exchange;
pub mod limits;
pub mod overload;
pub mod reply;
pub mod request;
pub mod respond;
pub mod route;
pub mod serve;
pub mod tunnels;
