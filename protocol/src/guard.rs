//! A serde adapter that keeps hostile bytes from steering allocation or recursion.
//!
//! bincode's owned decoders allocate a string's or byte buffer's announced length *before*
//! reading it, and its `with_limit` budget counts the in-memory size of every integer (8
//! bytes for a one-byte varint), so a limit tight enough to stop a hostile length also
//! refuses honest messages dense in small integers. Instead, every decode goes through
//! [`Guarded`], which:
//!
//! - turns `deserialize_string` / `deserialize_byte_buf` into their borrowed forms, so the
//!   slice reader checks the length against the bytes actually present and the value is then
//!   copied at its true size: no allocation is ever sized from an unchecked length;
//! - hides sequence and map size hints, so no container is pre-sized from a claimed count;
//! - refuses nesting deeper than [`MAX_DEPTH`], so a recursive user payload cannot overflow
//!   the stack.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// Deepest nesting of containers (structs, enums, options, sequences, maps) accepted.
pub(crate) const MAX_DEPTH: u16 = 64;

/// The root seed: deserializes a `T` through the guard.
pub(crate) struct Root<T>(pub(crate) PhantomData<T>);

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Root<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(Guarded { inner: d, depth: 0 })
    }
}

struct Guarded<D> {
    inner: D,
    depth: u16,
}

fn deeper<E: de::Error>(depth: u16) -> Result<u16, E> {
    if depth >= MAX_DEPTH {
        return Err(E::custom(format_args!(
            "value nested deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(depth + 1)
}

struct GVisitor<V> {
    inner: V,
    depth: u16,
}

struct GSeed<S> {
    inner: S,
    depth: u16,
}

struct GSeq<A> {
    inner: A,
    depth: u16,
}

struct GMap<A> {
    inner: A,
    depth: u16,
}

struct GEnum<A> {
    inner: A,
    depth: u16,
}

struct GVariant<A> {
    inner: A,
    depth: u16,
}

macro_rules! forward_leaf {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Guarded<D> {
    type Error = D::Error;

    forward_leaf!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_bytes,
        deserialize_unit,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner.deserialize_any(GVisitor { inner: v, depth })
    }
    // The point of the guard: borrow (bounds-checked against the input), then copy.
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_str(v)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_bytes(v)
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner.deserialize_option(GVisitor { inner: v, depth })
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_unit_struct(name, v)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner
            .deserialize_newtype_struct(name, GVisitor { inner: v, depth })
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner.deserialize_seq(GVisitor { inner: v, depth })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner
            .deserialize_tuple(len, GVisitor { inner: v, depth })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner
            .deserialize_tuple_struct(name, len, GVisitor { inner: v, depth })
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner.deserialize_map(GVisitor { inner: v, depth })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner
            .deserialize_struct(name, fields, GVisitor { inner: v, depth })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner
            .deserialize_enum(name, variants, GVisitor { inner: v, depth })
    }
    fn is_human_readable(&self) -> bool {
        // Must follow the inner format: types such as SocketAddr pick their layout by it.
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for GVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool: bool,
        visit_i8: i8,
        visit_i16: i16,
        visit_i32: i32,
        visit_i64: i64,
        visit_i128: i128,
        visit_u8: u8,
        visit_u16: u16,
        visit_u32: u32,
        visit_u64: u64,
        visit_u128: u128,
        visit_f32: f32,
        visit_f64: f64,
        visit_char: char,
        visit_str: &str,
        visit_borrowed_str: &'de str,
        visit_string: String,
        visit_bytes: &[u8],
        visit_borrowed_bytes: &'de [u8],
        visit_byte_buf: Vec<u8>,
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Guarded {
            inner: d,
            depth: self.depth,
        })
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Guarded {
            inner: d,
            depth: self.depth,
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(GSeq {
            inner: a,
            depth: self.depth,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(GMap {
            inner: a,
            depth: self.depth,
        })
    }
    fn visit_enum<A: EnumAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(GEnum {
            inner: a,
            depth: self.depth,
        })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for GSeed<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Guarded {
            inner: d,
            depth: self.depth,
        })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for GSeq<A> {
    type Error = A::Error;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.inner.next_element_seed(GSeed {
            inner: seed,
            depth: self.depth,
        })
    }
    // The count came from the peer: let containers grow with what actually decodes.
    fn size_hint(&self) -> Option<usize> {
        None
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for GMap<A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(GSeed {
            inner: seed,
            depth: self.depth,
        })
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(GSeed {
            inner: seed,
            depth: self.depth,
        })
    }
    fn size_hint(&self) -> Option<usize> {
        None
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for GEnum<A> {
    type Error = A::Error;
    type Variant = GVariant<A::Variant>;
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let depth = self.depth;
        let (value, variant) = self.inner.variant_seed(GSeed { inner: seed, depth })?;
        Ok((
            value,
            GVariant {
                inner: variant,
                depth,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for GVariant<A> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.newtype_variant_seed(GSeed {
            inner: seed,
            depth: self.depth,
        })
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, A::Error> {
        let depth = deeper(self.depth)?;
        self.inner.tuple_variant(len, GVisitor { inner: v, depth })
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, A::Error> {
        let depth = deeper(self.depth)?;
        self.inner
            .struct_variant(fields, GVisitor { inner: v, depth })
    }
}
