//! Contact sheets: a grid of frames and masks in one PNG.
