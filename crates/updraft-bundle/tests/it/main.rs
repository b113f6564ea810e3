//! Integration tests of the bundle format. One binary, one module per area.

mod bundle;
mod dsse;
mod fixture;
mod mutation;
mod trust;
