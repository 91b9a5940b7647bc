//! Reading files the operator names (the agent's configuration, the web configuration, certificates and keys)
//! with a size bound: a path to a device or a runaway file (`--config /dev/zero`) must fail with a message
//! instead of reading until memory runs out.

use std::{
    io::{self, Read as _},
    path::Path,
};

/// Far above any real configuration file or certificate chain (a full public CA bundle is about 200 KiB).
pub const MAX_BYTES: u64 = 4 << 20;

/// The whole file, or an error if it is larger than [`MAX_BYTES`].
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    std::fs::File::open(path)?.take(MAX_BYTES + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {} MiB; not a configuration file", MAX_BYTES >> 20),
        ));
    }
    Ok(data)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_and_oversized_files_are_refused() {
        let err = read(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
        let dir = std::env::temp_dir().join(format!("nsm-textfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small.yml");
        std::fs::write(&small, "listen: 127.0.0.1:1\n").unwrap();
        assert_eq!(read_to_string(&small).unwrap(), "listen: 127.0.0.1:1\n");
        let binary = dir.join("binary");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(read_to_string(&binary).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
