//! Content-Type inference at write time (PROTOCOL.md §8.6): magic bytes of the first few KiB, else the
//! file extension, else `application/octet-stream`. The request's own Content-Type is ignored.

/// How many leading bytes the magic-byte detection looks at.
pub const SNIFF_BYTES: usize = 8192;

/// The type of a file from the start of its content and its name.
pub fn infer(head: &[u8], file_name: &str) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_string();
    }
    mime_guess::from_path(file_name)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::infer;

    #[test]
    fn magic_bytes_win_over_the_extension() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(infer(png, "foo.jpg"), "image/png");
        assert_eq!(
            infer(b"#!/bin/sh\necho hi\n", "a.txt"),
            "text/x-shellscript"
        );
        assert_eq!(infer(b"<?xml version=\"1.0\"?><a/>", "a"), "text/xml");
        assert_eq!(infer(b"<!DOCTYPE html><html></html>", "a"), "text/html");
    }

    #[test]
    fn extension_then_octet_stream() {
        assert_eq!(infer(&[0, 1, 2, 3, 4], "foo.txt"), "text/plain");
        assert_eq!(infer(b"{\"a\":1}", "x.json"), "application/json");
        assert_eq!(infer(b"hello", "foo"), "application/octet-stream");
        assert_eq!(infer(b"", "a.md"), "text/markdown");
        assert_eq!(infer(b"", "a.svg"), "image/svg+xml");
    }
}
