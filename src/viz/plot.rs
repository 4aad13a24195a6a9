//! Metric plots (ROC, PR, PRO) as PNG.
