//! Fuzz targets for strata-alloc: the attack driver, also run on stable by the crate's unit
//! tests (`src/engine/tests.rs` includes `driver.rs` by path).

pub mod driver;
