//! Losses and training loops.
