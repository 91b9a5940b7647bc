//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`), enough to find struct member offsets.
//!
//! Rust eBPF has no CO-RE relocations, so the loader computes the offsets the programs need from the running
//! kernel's own type information (format: Documentation/bpf/btf.rst). Only what offset lookup needs is kept:
//! names, kinds, struct/union members, the referenced type of modifiers and typedefs, and sizes.

use std::{collections::HashMap, fs, path::Path};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

/// Errors reading or querying BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("the kernel's BTF has no struct {0:?}")]
    NoSuchStruct(String),
    #[error("struct {ty:?} has no member {member:?} in the kernel's BTF")]
    NoSuchMember { ty: String, member: String },
    #[error("member {member:?} of {ty:?} is not a struct or union, so {rest:?} cannot be looked up in it")]
    NotAggregate { ty: String, member: String, rest: String },
    #[error("member {member:?} of {ty:?} is a bit-field, which has no byte offset")]
    BitField { ty: String, member: String },
}

/// BTF kinds (`BTF_KIND_*`) this reader distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Struct,
    Union,
    /// typedef, volatile, const, restrict, type_tag: refer to another type with the same layout.
    Alias,
    Other,
}

#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset from the start of the enclosing struct.
    bit_offset: u32,
    /// Non-zero for a bit-field (only with `kind_flag`).
    bitfield_size: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: Kind,
    /// `size` for structs/unions, referenced type id for aliases.
    size_or_type: u32,
    /// Range into `Btf::members`.
    members: std::ops::Range<usize>,
}

/// Parsed BTF: types by id (id 0 is `void`) and the string section.
pub struct Btf {
    types: Vec<Type>,
    members: Vec<Member>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, BtfError> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at byte {at}")))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at byte {at}")))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads BTF from a raw `.BTF` blob file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read { path: path.display().to_string(), source })?;
        Self::parse(&data)
    }

    /// Parses a raw little-endian BTF blob (header, type section, string section).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)".into()));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize, what: &str| {
            let start = hdr_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(start), Some(end)) if end <= data.len() => Ok(&data[start..end]),
                _ => Err(BtfError::Malformed(format!("{what} section out of bounds"))),
            }
        };
        let type_data = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();

        // Type id 0 is void.
        let mut types = vec![Type { name_off: 0, kind: Kind::Other, size_or_type: 0, members: 0..0 }];
        let mut members = Vec::new();
        let mut at = 0;
        while at < type_data.len() {
            let name_off = u32_at(type_data, at)?;
            let info = u32_at(type_data, at + 4)?;
            let size_or_type = u32_at(type_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let raw_kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let first_member = members.len();
            let kind = match raw_kind {
                4 | 5 => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(type_data, m + 8)?;
                        let (bit_offset, bitfield_size) =
                            if kind_flag { (offset & 0x00ff_ffff, offset >> 24) } else { (offset, 0) };
                        members.push(Member {
                            name_off: u32_at(type_data, m)?,
                            type_id: u32_at(type_data, m + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    at += vlen * 12;
                    if raw_kind == 4 { Kind::Struct } else { Kind::Union }
                }
                8..=11 | 18 => Kind::Alias,
                _ => {
                    at += match raw_kind {
                        1 | 14 | 17 => 4,         // INT, VAR, DECL_TAG: one u32
                        3 => 12,                  // ARRAY: btf_array
                        6 | 13 => vlen * 8,       // ENUM, FUNC_PROTO
                        15 | 19 => vlen * 12,     // DATASEC, ENUM64
                        0 | 2 | 7 | 12 | 16 => 0, // (unknown 0), PTR, FWD, FUNC, FLOAT
                        other => return Err(BtfError::Malformed(format!("unknown BTF kind {other}"))),
                    };
                    Kind::Other
                }
            };
            types.push(Type { name_off, kind, size_or_type, members: first_member..members.len() });
        }
        if at != type_data.len() {
            return Err(BtfError::Malformed("type section ends inside a type".into()));
        }

        let mut btf = Btf { types, members, strings, structs_by_name: HashMap::new() };
        let mut by_name = HashMap::new();
        for (id, ty) in btf.types.iter().enumerate() {
            // A struct may appear as a forward declaration too; only complete structs are indexed, first wins.
            if ty.kind == Kind::Struct && ty.name_off != 0 {
                let name = btf.string(ty.name_off)?;
                by_name.entry(name.to_owned()).or_insert(id as u32);
            }
        }
        btf.structs_by_name = by_name;
        Ok(btf)
    }

    fn string(&self, offset: u32) -> Result<&str, BtfError> {
        let tail = self
            .strings
            .get(offset as usize..)
            .ok_or_else(|| BtfError::Malformed(format!("string offset {offset} out of bounds")))?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).map_err(|_| BtfError::Malformed(format!("string at {offset} is not UTF-8")))
    }

    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        self.types.get(id as usize).ok_or_else(|| BtfError::Malformed(format!("type id {id} out of range")))
    }

    /// Follows typedefs and modifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<(u32, &Type), BtfError> {
        // Chains are short; the bound only guards against a malformed cycle.
        for _ in 0..32 {
            let ty = self.ty(id)?;
            if ty.kind != Kind::Alias {
                return Ok((id, ty));
            }
            id = ty.size_or_type;
        }
        Err(BtfError::Malformed(format!("type alias chain from id {id} too long")))
    }

    /// Size in bytes of struct `name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        let id = self.struct_id(name)?;
        Ok(self.ty(id)?.size_or_type)
    }

    fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        self.structs_by_name.get(name).copied().ok_or_else(|| BtfError::NoSuchStruct(name.to_owned()))
    }

    /// Byte offset of `path` (members separated by '.') inside struct `name`. Members of anonymous structs and
    /// unions are found as if they were direct members, as C sees them.
    pub fn member_offset(&self, name: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = self.struct_id(name)?;
        let mut type_name = name.to_owned();
        let mut total_bits = 0u32;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (bits, member) = self
                .find_member(id, part)?
                .ok_or_else(|| BtfError::NoSuchMember { ty: type_name.clone(), member: part.to_owned() })?;
            if member.bitfield_size != 0 {
                return Err(BtfError::BitField { ty: type_name, member: part.to_owned() });
            }
            total_bits = total_bits
                .checked_add(bits)
                .ok_or_else(|| BtfError::Malformed(format!("{name}.{path} lies beyond 4 Gbit")))?;
            if parts.peek().is_some() {
                let (next_id, next) = self.resolve(member.type_id)?;
                if !matches!(next.kind, Kind::Struct | Kind::Union) {
                    let rest: Vec<&str> = parts.collect();
                    return Err(BtfError::NotAggregate {
                        ty: type_name,
                        member: part.to_owned(),
                        rest: rest.join("."),
                    });
                }
                id = next_id;
                type_name = format!("{type_name}.{part}");
            }
        }
        if !total_bits.is_multiple_of(8) {
            return Err(BtfError::Malformed(format!("{name}.{path} is not byte aligned")));
        }
        Ok(total_bits / 8)
    }

    /// Finds member `name` in struct/union `id`, descending into anonymous members; returns its bit offset
    /// from the start of `id`.
    fn find_member(&self, id: u32, name: &str) -> Result<Option<(u32, Member)>, BtfError> {
        self.find_member_in(id, name, &mut std::collections::HashSet::new())
    }

    /// [`Self::find_member`], skipping aggregates already searched: a malformed blob can make anonymous members
    /// refer back to their container (endless recursion) or to one aggregate many times over (exponential
    /// time); both found by `cargo xtask fuzz`. A well-formed one never needs a second visit.
    fn find_member_in(
        &self,
        id: u32,
        name: &str,
        searched: &mut std::collections::HashSet<u32>,
    ) -> Result<Option<(u32, Member)>, BtfError> {
        if !searched.insert(id) {
            return Ok(None);
        }
        let ty = self.ty(id)?;
        for member in &self.members[ty.members.clone()] {
            if member.name_off == 0 {
                let (inner_id, inner) = self.resolve(member.type_id)?;
                if matches!(inner.kind, Kind::Struct | Kind::Union)
                    && let Some((bits, found)) = self.find_member_in(inner_id, name, searched)?
                {
                    // Offsets that overflow were found by `cargo xtask fuzz`; a real kernel's never do.
                    let bits = member.bit_offset.checked_add(bits).ok_or_else(|| {
                        BtfError::Malformed(format!("member {name:?} of type {id} lies beyond 4 Gbit"))
                    })?;
                    return Ok(Some((bits, found)));
                }
            } else if self.string(member.name_off)? == name {
                return Ok(Some((member.bit_offset, *member)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `struct inner { int a; union { int b; int c; }; }` and
    /// `struct outer { long x; struct inner in; typedef-of-inner t; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0inner\0a\0b\0c\0outer\0x\0in\0t\0inner_t\0long\0".to_vec();
        let s = |name: &str| {
            let needle = format!("\0{name}\0");
            strings.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() as u32 + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend_from_slice(&w.to_le_bytes()));
        // 1: int (4 bytes)
        push(&[s("int"), 1 << 24, 4, 32]);
        // 2: anonymous union { int b; int c; }
        push(&[0, (5 << 24) | 2, 4, s("b"), 1, 0, s("c"), 1, 0]);
        // 3: struct inner { int a; <anon union>; }
        push(&[s("inner"), (4 << 24) | 2, 8, s("a"), 1, 0, 0, 2, 32]);
        // 4: typedef inner_t -> 3
        push(&[s("inner_t"), 8 << 24, 3]);
        // 5: long (8 bytes)
        push(&[s("long"), 1 << 24, 8, 64]);
        // 6: struct outer { long x; struct inner in; inner_t t; }
        push(&[s("outer"), (4 << 24) | 3, 24, s("x"), 5, 0, s("in"), 3, 64, s("t"), 4, 128]);
        blob(&types, &strings)
    }

    /// A BTF blob: header, `types` (encoded type records), `strings`.
    fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for word in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            blob.extend_from_slice(&word.to_le_bytes());
        }
        blob.extend_from_slice(types);
        blob.extend_from_slice(strings);
        blob
    }

    fn words(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn finds_nested_and_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", "x").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "in").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "in.a").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "in.c").unwrap(), 12);
        assert_eq!(btf.member_offset("outer", "t.b").unwrap(), 20, "typedefs are followed");
        assert_eq!(btf.struct_size("outer").unwrap(), 24);
    }

    #[test]
    fn anonymous_members_referring_back_end_the_search() {
        // The fuzz crash (fuzz/seeds/btf/regression-anonymous-cycle): `struct s { <anonymous> of type s; }`
        // recursed without end.
        let btf = Btf::parse(&blob(&words(&[1, (4 << 24) | 1, 4, 0, 1, 0]), b"\0s\0a\0")).unwrap();
        assert!(matches!(btf.member_offset("s", "a"), Err(BtfError::NoSuchMember { .. })));
    }

    #[test]
    fn offsets_beyond_u32_are_malformed() {
        // The fuzz crash (fuzz/seeds/btf/regression-offset-overflow): `struct s { <anonymous struct t> at bit
        // 0xffff_fff0; }`, `struct t { a at bit 0x100; }` overflowed the sum.
        let types = words(&[1, (4 << 24) | 1, 4, 0, 2, 0xffff_fff0, 5, (4 << 24) | 1, 4, 3, 2, 0x100]);
        let btf = Btf::parse(&blob(&types, b"\0s\0a\0t\0")).unwrap();
        assert!(
            matches!(btf.member_offset("s", "a"), Err(BtfError::Malformed(_))),
            "{:?}",
            btf.member_offset("s", "a")
        );
    }

    #[test]
    fn names_what_is_missing() {
        let btf = Btf::parse(&sample()).unwrap();
        let err = btf.member_offset("outer", "in.zz").unwrap_err();
        assert_eq!(err.to_string(), "struct \"outer.in\" has no member \"zz\" in the kernel's BTF");
        let err = btf.member_offset("nope", "x").unwrap_err();
        assert!(matches!(err, BtfError::NoSuchStruct(ref n) if n == "nope"));
        let err = btf.member_offset("outer", "x.y").unwrap_err();
        assert!(matches!(err, BtfError::NotAggregate { .. }), "{err}");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut blob = sample();
        blob.truncate(blob.len() - 20);
        assert!(Btf::parse(&blob).is_err());
    }

    #[test]
    fn reads_the_running_kernel() {
        // Every kernel this tool supports has BTF; the agent cannot start without it either.
        let btf = Btf::from_sys_fs().expect("/sys/kernel/btf/vmlinux must be readable");
        let nsproxy = btf.member_offset("task_struct", "nsproxy").unwrap();
        assert!(nsproxy > 0);
        btf.member_offset("net", "ns.inum").unwrap();
    }
}
