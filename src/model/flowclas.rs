//! FlowCLAS normalizing flow.
