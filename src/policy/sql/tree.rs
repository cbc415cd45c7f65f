//! A generic copy of pg_query's parse tree, so that the classifier can visit every node without
//! a hand-written walker for each of PostgreSQL's ~270 node types (a new field or node type in
//! a pg_query upgrade is walked without a code change).
//!
//! pg_query's protobuf types derive `serde::Serialize`; [`build`] runs them through a
//! serializer that keeps each message's type name (`DeleteStmt`, `RangeVar`) and field names.
//! The protobuf wrapper `Node { node: oneof }` is collapsed into the message it holds, and
//! source positions (`location` fields) are dropped: they say nothing about what a statement
//! does, and leaving them out lets [`Node::digest`] fingerprint the tree regardless of layout.
//!
//! Depth: pg_query decodes its protobuf with prost's recursion limit (100 nested messages), so
//! every tree handed here is shallow; [`build`] and the walkers recurse freely.

use serde::ser::{self, Serialize};

/// One message of the parse tree: its protobuf type name and its fields, in declaration order.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub(super) kind: &'static str,
    pub(super) fields: Vec<(&'static str, Value)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Node(Box<Node>),
}

/// The serializer refused a value (a map: the parse tree holds none).
#[derive(Debug)]
pub(super) struct TreeError(String);

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TreeError {}

impl ser::Error for TreeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TreeError(msg.to_string())
    }
}

/// Copies a serializable pg_query value into a generic tree.
pub(super) fn build<T: Serialize + ?Sized>(value: &T) -> Result<Value, TreeError> {
    value.serialize(Builder)
}

impl Value {
    pub(super) fn as_node(&self) -> Option<&Node> {
        match self {
            Value::Node(n) => Some(n),
            _ => None,
        }
    }

    pub(super) fn as_list(&self) -> &[Value] {
        match self {
            Value::List(items) => items,
            _ => &[],
        }
    }
}

impl Node {
    pub(super) fn get(&self, field: &str) -> &Value {
        self.fields
            .iter()
            .find(|(name, _)| *name == field)
            .map_or(&Value::Null, |(_, v)| v)
    }

    pub(super) fn node(&self, field: &str) -> Option<&Node> {
        self.get(field).as_node()
    }

    pub(super) fn list(&self, field: &str) -> &[Value] {
        self.get(field).as_list()
    }

    pub(super) fn str(&self, field: &str) -> &str {
        match self.get(field) {
            Value::Str(s) => s,
            _ => "",
        }
    }

    pub(super) fn int(&self, field: &str) -> i64 {
        match self.get(field) {
            Value::Int(i) => *i,
            _ => 0,
        }
    }

    pub(super) fn flag(&self, field: &str) -> bool {
        matches!(self.get(field), Value::Bool(true))
    }

    /// Whether this node, or any node below it, is of one of these kinds.
    pub(super) fn holds(&self, kinds: &[&str]) -> bool {
        fn value(v: &Value, kinds: &[&str]) -> bool {
            match v {
                Value::Node(n) => n.holds(kinds),
                Value::List(items) => items.iter().any(|i| value(i, kinds)),
                _ => false,
            }
        }
        kinds.contains(&self.kind) || self.fields.iter().any(|(_, v)| value(v, kinds))
    }

    /// Whether the field holds something (a node, a non-empty list).
    pub(super) fn has(&self, field: &str) -> bool {
        match self.get(field) {
            Value::Null => false,
            Value::List(items) => !items.is_empty(),
            _ => true,
        }
    }

    /// The text of a `String` node (identifiers, names, option values).
    pub(super) fn sval(&self) -> Option<&str> {
        (self.kind == "String").then(|| self.str("sval"))
    }

    /// Feeds an unambiguous encoding of the node into a digest.
    pub(super) fn digest(&self, out: &mut impl FnMut(&[u8])) {
        out(b"N");
        digest_str(self.kind, out);
        digest_len(self.fields.len(), out);
        for (name, value) in &self.fields {
            digest_str(name, out);
            value.digest(out);
        }
    }
}

impl Value {
    pub(super) fn digest(&self, out: &mut impl FnMut(&[u8])) {
        match self {
            Value::Null => out(b"0"),
            Value::Bool(b) => out(if *b { b"T" } else { b"F" }),
            Value::Int(i) => {
                out(b"I");
                out(&i.to_le_bytes());
            }
            Value::Float(f) => {
                out(b"D");
                out(&f.to_bits().to_le_bytes());
            }
            Value::Str(s) => {
                out(b"S");
                digest_str(s, out);
            }
            Value::List(items) => {
                out(b"L");
                digest_len(items.len(), out);
                for item in items {
                    item.digest(out);
                }
            }
            Value::Node(n) => n.digest(out),
        }
    }
}

fn digest_len(len: usize, out: &mut impl FnMut(&[u8])) {
    out(&(len as u64).to_le_bytes());
}

fn digest_str(s: &str, out: &mut impl FnMut(&[u8])) {
    digest_len(s.len(), out);
    out(s.as_bytes());
}

/// Source positions: not part of what a statement does.
fn is_position(field: &str) -> bool {
    field == "location" || field.ends_with("_location") || field == "stmt_len"
}

struct Builder;

struct SeqBuilder(Vec<Value>);

struct StructBuilder {
    kind: &'static str,
    fields: Vec<(&'static str, Value)>,
}

impl ser::Serializer for Builder {
    type Ok = Value;
    type Error = TreeError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = ser::Impossible<Value, TreeError>;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = StructBuilder;

    fn serialize_bool(self, v: bool) -> Result<Value, TreeError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, TreeError> {
        Ok(Value::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, TreeError> {
        // Only planner nodes (never in a raw parse tree) hold u64 values.
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, TreeError> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, TreeError> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, TreeError> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, TreeError> {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, TreeError> {
        Ok(Value::List(
            v.iter().map(|b| Value::Int(i64::from(*b))).collect(),
        ))
    }
    fn serialize_none(self) -> Result<Value, TreeError> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, TreeError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, TreeError> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, TreeError> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, TreeError> {
        Ok(Value::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, TreeError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, TreeError> {
        // A protobuf oneof: the message it holds carries its own type name.
        match value.serialize(Builder)? {
            node @ Value::Node(_) => Ok(node),
            other => Ok(Value::Node(Box::new(Node {
                kind: variant,
                fields: vec![("value", other)],
            }))),
        }
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, TreeError> {
        Ok(SeqBuilder(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, TreeError> {
        Ok(SeqBuilder(Vec::with_capacity(len)))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, TreeError> {
        Ok(SeqBuilder(Vec::with_capacity(len)))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, TreeError> {
        Ok(SeqBuilder(Vec::with_capacity(len)))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, TreeError> {
        Err(TreeError("a map in the parse tree".to_owned()))
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<StructBuilder, TreeError> {
        Ok(StructBuilder {
            kind: name,
            fields: Vec::with_capacity(len),
        })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructBuilder, TreeError> {
        Ok(StructBuilder {
            kind: variant,
            fields: Vec::with_capacity(len),
        })
    }
}

impl SeqBuilder {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.0.push(value.serialize(Builder)?);
        Ok(())
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.0))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.0))
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.0))
    }
}

impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.0))
    }
}

impl StructBuilder {
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), TreeError> {
        if !is_position(key) {
            self.fields.push((key, value.serialize(Builder)?));
        }
        Ok(())
    }

    fn finish(mut self) -> Value {
        // `Node { node: oneof }` is only a wrapper around the message it holds.
        if self.kind == "Node" && self.fields.len() == 1 {
            if let Some((_, inner)) = self.fields.pop() {
                return inner;
            }
        }
        Value::Node(Box::new(Node {
            kind: self.kind,
            fields: self.fields,
        }))
    }
}

impl ser::SerializeStruct for StructBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), TreeError> {
        self.field(key, value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for StructBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), TreeError> {
        self.field(key, value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(self.finish())
    }
}
