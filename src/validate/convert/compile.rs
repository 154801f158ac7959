//! Compiling an Avro schema into the [`Validator`]'s flat table of nodes: named types
//! resolved, field defaults converted once every node exists.

use super::*;

/// A field default waiting for the whole schema to be compiled.
pub(super) struct PendingDefault {
    pub(super) record: NodeId,
    pub(super) field: usize,
    pub(super) default: Json,
    pub(super) path: String,
}

/// Schema → nodes.
#[derive(Default)]
pub(super) struct Compiler {
    pub(super) nodes: Vec<Node>,
    /// Full names of named types → their node.
    pub(super) named: HashMap<String, NodeId>,
    pub(super) defaults: Vec<PendingDefault>,
}

impl Compiler {
    pub(super) fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    pub(super) fn define(&mut self, name: &Name, ns: Option<&str>, node: Node) -> NodeId {
        let id = self.push(node);
        self.named
            .insert(name.fully_qualified_name(ns).fullname(None), id);
        id
    }

    /// Defines a named type whose node carries its own full name (a fixed, an enum, a decimal
    /// on a fixed): `node` gets the full name the type is registered under.
    pub(super) fn define_named(
        &mut self,
        name: &Name,
        ns: Option<&str>,
        node: impl FnOnce(String) -> Node,
    ) -> NodeId {
        let full = name.fully_qualified_name(ns).fullname(None);
        let id = self.push(node(full.clone()));
        self.named.insert(full, id);
        id
    }

    pub(super) fn compile(
        &mut self,
        schema: &Schema,
        ns: Option<&str>,
        path: &str,
    ) -> Result<NodeId, SchemaError> {
        let unsupported = |what: &str| SchemaError::Unsupported {
            path: path.to_owned(),
            what: what.to_owned(),
        };
        let node = match schema {
            Schema::Null => Node::Null,
            Schema::Boolean => Node::Boolean,
            Schema::Int => Node::Int(IntKind::Int),
            Schema::Date => Node::Int(IntKind::Date),
            Schema::TimeMillis => Node::Int(IntKind::TimeMillis),
            Schema::Long => Node::Long(LongKind::Long),
            Schema::TimeMicros => Node::Long(LongKind::TimeMicros),
            Schema::TimestampMillis => Node::Long(LongKind::TimestampMillis),
            Schema::TimestampMicros => Node::Long(LongKind::TimestampMicros),
            Schema::TimestampNanos => Node::Long(LongKind::TimestampNanos),
            Schema::LocalTimestampMillis => Node::Long(LongKind::LocalTimestampMillis),
            Schema::LocalTimestampMicros => Node::Long(LongKind::LocalTimestampMicros),
            Schema::LocalTimestampNanos => Node::Long(LongKind::LocalTimestampNanos),
            Schema::Float => Node::Float,
            Schema::Double => Node::Double,
            Schema::Bytes => Node::Bytes,
            Schema::String => Node::String,
            Schema::Uuid(UuidSchema::Fixed(fixed)) => {
                return Ok(self.define(&fixed.name, ns, Node::Uuid(UuidRepr::Fixed)));
            }
            Schema::Uuid(UuidSchema::Bytes) => Node::Uuid(UuidRepr::Bytes),
            Schema::Uuid(UuidSchema::String) => Node::Uuid(UuidRepr::String),
            Schema::Fixed(fixed) => {
                return Ok(self.define_named(&fixed.name, ns, |name| Node::Fixed {
                    name,
                    size: fixed.size,
                }));
            }
            Schema::Enum(e) => {
                return Ok(self.define_named(&e.name, ns, |name| Node::Enum {
                    name,
                    symbols: e.symbols.clone(),
                }));
            }
            Schema::Array(a) => Node::Array(self.compile(&a.items, ns, &format!("{path}[]"))?),
            Schema::Map(m) => Node::Map(self.compile(&m.types, ns, &format!("{path}{{}}"))?),
            Schema::Union(u) => Node::Union(
                u.variants()
                    .iter()
                    .map(|v| self.compile(v, ns, path))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Record(r) => {
                let id = self.define(&r.name, ns, Node::Pending);
                let full = r.name.fully_qualified_name(ns);
                let record_ns = full.namespace();
                let mut fields = Vec::with_capacity(r.fields.len());
                for (i, f) in r.fields.iter().enumerate() {
                    let field_path = if path == "root" {
                        f.name.clone()
                    } else {
                        format!("{path}.{}", f.name)
                    };
                    let node = self.compile(&f.schema, record_ns, &field_path)?;
                    let null = self.null_filler(node);
                    if let Some(default) = &f.default {
                        self.defaults.push(PendingDefault {
                            record: id,
                            field: i,
                            default: default.clone(),
                            path: field_path,
                        });
                    }
                    fields.push(Field {
                        name: f.name.clone(),
                        node,
                        absent: null.clone(),
                        null,
                    });
                }
                let index = (fields.len() > SCAN_FIELDS).then(|| {
                    fields
                        .iter()
                        .enumerate()
                        .map(|(i, f)| (f.name.clone(), i))
                        .collect()
                });
                self.nodes[id] = Node::Record {
                    name: full.fullname(None),
                    fields,
                    index,
                };
                return Ok(id);
            }
            Schema::Ref { name } => {
                let full = name.fully_qualified_name(ns).fullname(None);
                return self
                    .named
                    .get(&full)
                    .copied()
                    .ok_or(SchemaError::UnresolvedName(full));
            }
            Schema::Decimal(d) => {
                let (precision, scale) = (d.precision, d.scale);
                return Ok(match &d.inner {
                    InnerDecimalSchema::Bytes => self.push(Node::Decimal {
                        name: None,
                        decimal: DecimalType {
                            precision,
                            scale,
                            size: None,
                        },
                    }),
                    InnerDecimalSchema::Fixed(fixed) => {
                        let decimal = DecimalType {
                            precision,
                            scale,
                            size: Some(fixed.size),
                        };
                        self.define_named(&fixed.name, ns, |name| Node::Decimal {
                            name: Some(name),
                            decimal,
                        })
                    }
                });
            }
            Schema::BigDecimal => return Err(unsupported("big-decimal")),
            Schema::Duration(_) => return Err(unsupported("duration")),
        };
        Ok(self.push(node))
    }

    /// What JSON null becomes for a node, if the node admits null.
    pub(super) fn null_filler(&self, node: NodeId) -> Option<Filler> {
        match &self.nodes[node] {
            Node::Null => Some(Filler {
                value: AvroValue::Null,
                bytes: Vec::new(),
            }),
            Node::Union(branches) => {
                let index = branches
                    .iter()
                    .position(|&b| matches!(self.nodes[b], Node::Null))?;
                let mut bytes = Vec::new();
                ByteSink { out: &mut bytes }.branch(index as u32);
                Some(Filler {
                    value: AvroValue::Union(index as u32, Box::new(AvroValue::Null)),
                    bytes,
                })
            }
            _ => None,
        }
    }
}

impl Validator {
    /// Converts a field default (Avro JSON) once all nodes exist, in both forms.
    pub(super) fn set_default(&mut self, pending: PendingDefault) -> Result<(), SchemaError> {
        let PendingDefault {
            record,
            field,
            default,
            path,
        } = pending;
        let node = match &self.nodes[record] {
            Node::Record { fields, .. } => fields[field].node,
            _ => unreachable!("defaults are only recorded for record fields"),
        };
        let bad = |e: &RecordError| SchemaError::BadDefault {
            path: path.clone(),
            detail: e.to_string(),
        };
        let mut walk = Walk::new(self, ValueSink, 1);
        walk.default = true;
        let value = walk
            .conv(node, &default)
            .ok_or_else(|| bad(&walk.errors[0]))?;
        let mut bytes = Vec::new();
        let mut walk = Walk::new(self, ByteSink { out: &mut bytes }, 1);
        walk.default = true;
        walk.conv(node, &default)
            .ok_or_else(|| bad(&walk.errors[0]))?;
        if let Node::Record { fields, .. } = &mut self.nodes[record] {
            let f = &mut fields[field];
            let filler = Filler { value, bytes };
            if f.null.is_none() {
                f.null = Some(filler.clone());
            }
            f.absent = Some(filler);
        }
        Ok(())
    }
}
