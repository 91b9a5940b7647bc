//! The little ELF64 reading the kernel matrix needs: whether a decompressed vmlinux is whole, and a module's
//! `.modinfo` section (its `depends=`), so no kmod tools are needed on the host.

const ELF_MAGIC: &[u8] = b"\x7fELF";

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?)).ok()
}

/// A 64-bit little-endian ELF file.
fn is_elf64le(b: &[u8]) -> bool {
    b.starts_with(ELF_MAGIC) && b.get(4) == Some(&2) && b.get(5) == Some(&1)
}

/// An ELF64 file whose program segments and section header table all lie inside it: a decompressor that
/// stopped early (a false magic match that happened to decompress a little) leaves a file that starts right
/// but is cut short.
pub fn is_complete_elf(b: &[u8]) -> bool {
    let check = || -> Option<bool> {
        if !is_elf64le(b) {
            return Some(false);
        }
        let (phoff, phentsize, phnum) =
            (u64_at(b, 0x20)?, usize::from(u16_at(b, 0x36)?), usize::from(u16_at(b, 0x38)?));
        let (shoff, shentsize, shnum) =
            (u64_at(b, 0x28)?, usize::from(u16_at(b, 0x3a)?), usize::from(u16_at(b, 0x3c)?));
        if phnum == 0 || shoff.checked_add(shentsize.checked_mul(shnum)?)? > b.len() {
            return Some(false);
        }
        for i in 0..phnum {
            let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
            let (offset, filesz) = (u64_at(b, ph + 0x08)?, u64_at(b, ph + 0x20)?);
            if offset.checked_add(filesz)? > b.len() {
                return Some(false);
            }
        }
        Some(true)
    };
    check().unwrap_or(false)
}

/// The contents of the section called `name`.
pub fn section<'a>(b: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if !is_elf64le(b) {
        return None;
    }
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(b, 0x28)?, usize::from(u16_at(b, 0x3a)?), usize::from(u16_at(b, 0x3c)?), usize::from(u16_at(b, 0x3e)?));
    let header = |i: usize| -> Option<(usize, usize, usize)> {
        let sh = shoff.checked_add(i.checked_mul(shentsize)?)?;
        // sh_name, sh_offset, sh_size
        Some((usize::try_from(u32_at(b, sh)?).ok()?, u64_at(b, sh + 0x18)?, u64_at(b, sh + 0x20)?))
    };
    let contents = |offset: usize, size: usize| b.get(offset..offset.checked_add(size)?);
    let (_, strtab_offset, strtab_size) = header(shstrndx)?;
    let strtab = contents(strtab_offset, strtab_size)?;
    (0..shnum).find_map(|i| {
        let (name_at, offset, size) = header(i)?;
        let section_name = strtab.get(name_at..)?.split(|&c| c == 0).next()?;
        (section_name == name.as_bytes()).then(|| contents(offset, size)).flatten()
    })
}

/// A module's `depends=` list: the modules it needs loaded first (by module name).
pub fn module_depends(module: &[u8]) -> Option<Vec<String>> {
    let modinfo = section(module, ".modinfo")?;
    let depends = modinfo
        .split(|&c| c == 0)
        .find_map(|entry| entry.strip_prefix(b"depends="))
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default();
    Some(depends.split(',').filter(|d| !d.is_empty()).map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_short_elf_is_not_complete() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(is_complete_elf(&me));
        assert!(!is_complete_elf(&me[..me.len() / 2]));
        assert!(section(&me, ".text").is_some_and(|text| !text.is_empty()));
        assert_eq!(module_depends(&me), None, "not a module: no .modinfo");
    }
}
