//! Every message type we read, from the same bytes: CDR decoding, image conversions, and the
//! node's 32FC<C> map and feature conversions.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stars::msg::{Bool, DiagnosticArray, Image, Message};
use stars::node::maps::{features_from_image, map_from_image};

fuzz_target!(|data: &[u8]| {
    let _ = Bool::decode(data);
    if let Ok(diagnostics) = DiagnosticArray::decode(data) {
        assert_eq!(
            DiagnosticArray::decode(&diagnostics.encode()).ok(),
            Some(diagnostics)
        );
    }
    let borrowed = Image::decode_ref(data);
    let Ok(image) = Image::decode(data) else {
        assert!(borrowed.is_err(), "owned and borrowed decoding disagree");
        return;
    };
    // What we decoded (either byte order) re-encodes to the same message.
    assert_eq!(Image::decode(&image.encode()).ok().as_ref(), Some(&image));
    let _ = image.to_rgb8();
    let _ = image.to_mono8();
    let _ = map_from_image(&image);
    let _ = features_from_image(&image);
});
