//! Colormaps: heatmaps for anomaly maps and a palette for semantic-id masks.
