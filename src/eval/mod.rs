//! Streaming pixel metrics (AUROC, AP, FPR@95, AUPRO), calibration, reports.
