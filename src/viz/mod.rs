//! Pictures: colormaps and mask palettes, heat overlays, contact sheets, metric plots.
pub mod colormap;
pub mod contact_sheet;
pub mod metric_plots;
pub mod overlay;
pub mod plot;
