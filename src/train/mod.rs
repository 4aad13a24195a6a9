//! Losses and training loops.
//!
//! The detector (FlowCLAS) trains on cached backbone features ([`cache`]) of frames with pasted
//! pseudo-anomalies ([`crate::data::paste`]), with the likelihood and contrastive losses of
//! [`loss`] and the warm-up + cosine schedule of [`schedule`]; [`detector`] is the loop.
pub mod cache;
pub mod detector;
pub mod loss;
pub mod refiner;
pub mod refiner_loss;
pub mod schedule;
