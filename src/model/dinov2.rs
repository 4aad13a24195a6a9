//! DINOv2 vision transformer.
