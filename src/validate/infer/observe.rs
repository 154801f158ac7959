//! What the samples show: each field's shape (JSON types seen, strings, nesting), observed
//! against the current schema.

use super::*;

/// What the samples showed about one JSON value position: every JSON type seen there.
#[derive(Debug, Default, Clone)]
pub(super) struct Shape {
    /// Non-null occurrences.
    pub(super) present: usize,
    pub(super) null: bool,
    pub(super) boolean: bool,
    pub(super) integer: bool,
    pub(super) float: bool,
    pub(super) string: bool,
    /// Strings seen, and how many of them read as RFC 3339 timestamps, as ISO 8601 dates.
    pub(super) strings: usize,
    pub(super) timestamps: usize,
    pub(super) dates: usize,
    /// Merged item shape, if arrays were seen.
    pub(super) array: Option<Box<Shape>>,
    /// Merged member shapes and the number of objects seen, if objects were seen.
    pub(super) object: Option<(BTreeMap<String, Shape>, usize)>,
}

impl Shape {
    pub(super) fn merge(&mut self, json: &Json) {
        match json {
            Json::Null => {
                self.null = true;
                return;
            }
            Json::Bool(_) => self.boolean = true,
            Json::Number(n) if n.is_f64() => self.float = true,
            Json::Number(_) => self.integer = true,
            Json::String(s) => {
                self.string = true;
                self.strings += 1;
                self.timestamps += usize::from(rfc3339_nanos(s).is_some());
                self.dates += usize::from(date_days(s).is_some());
            }
            Json::Array(items) => {
                let shape = self.array.get_or_insert_default();
                for item in items {
                    shape.merge(item);
                }
            }
            Json::Object(members) => {
                let (shapes, seen) = self.object.get_or_insert_default();
                *seen += 1;
                for (name, value) in members {
                    shapes.entry(name.clone()).or_default().merge(value);
                }
            }
        }
        self.present += 1;
    }
}

/// Where new fields go: a record's full name → new field name → (the path it was first seen at,
/// its shape).
type NewFields = BTreeMap<String, BTreeMap<String, (String, Shape)>>;

/// Walks samples along the current schema, collecting additions and blockers.
pub(super) struct Observer<'s> {
    /// Named types of the current schema by full name.
    pub(super) defined: HashMap<String, &'s Schema>,
    /// Every full name in use (new records must not collide).
    pub(super) names: HashSet<String>,
    pub(super) new_fields: NewFields,
    /// Enum full name → new symbols.
    pub(super) new_symbols: BTreeMap<String, BTreeSet<String>>,
    /// Full name → the first field path it was met at, and its namespace, for messages.
    pub(super) seen_at: HashMap<String, (String, Option<String>)>,
    /// Records (by full name) seen in samples, to tell "present in every sample".
    pub(super) record_count: HashMap<String, usize>,
    pub(super) blockers: BTreeSet<String>,
}

pub(super) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, the Avro name rule.
pub(super) fn is_avro_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether a JSON value fits a (non-union) schema's type, ignoring nested contents.
pub(super) fn fits(schema: &Schema, json: &Json) -> bool {
    match (schema, json) {
        (Schema::Null, Json::Null) | (Schema::Boolean, Json::Bool(_)) => true,
        (Schema::Int | Schema::Date | Schema::TimeMillis, Json::Number(n)) => {
            n.as_i64().is_some_and(|i| i32::try_from(i).is_ok())
        }
        (Schema::Decimal(_), Json::Number(_) | Json::String(_)) => true,
        (
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos,
            Json::Number(n),
        ) => n.is_i64(),
        (
            Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros,
            Json::String(_),
        ) => true,
        (Schema::Float | Schema::Double, Json::Number(_)) => true,
        (
            Schema::String | Schema::Bytes | Schema::Fixed(_) | Schema::Enum(_) | Schema::Uuid(_),
            Json::String(_),
        ) => true,
        (Schema::Array(_), Json::Array(_)) => true,
        (Schema::Map(_) | Schema::Record(_), Json::Object(_)) => true,
        _ => false,
    }
}

impl<'s> Observer<'s> {
    pub(super) fn new(root: &'s Schema) -> Self {
        let mut observer = Observer {
            defined: HashMap::new(),
            names: HashSet::new(),
            new_fields: BTreeMap::new(),
            new_symbols: BTreeMap::new(),
            seen_at: HashMap::new(),
            record_count: HashMap::new(),
            blockers: BTreeSet::new(),
        };
        observer.define(root, None);
        observer
    }

    /// Registers the named types of a schema.
    pub(super) fn define(&mut self, schema: &'s Schema, ns: Option<&str>) {
        match schema {
            Schema::Record(RecordSchema { name, fields, .. }) => {
                let full = name.fully_qualified_name(ns);
                let full_name = full.fullname(None);
                self.names.insert(full_name.clone());
                self.defined.insert(full_name, schema);
                for f in fields {
                    self.define(&f.schema, full.namespace());
                }
            }
            Schema::Enum(e) => {
                let full = e.name.fully_qualified_name(ns).fullname(None);
                self.names.insert(full.clone());
                self.defined.insert(full, schema);
            }
            Schema::Fixed(f) => {
                let full = f.name.fully_qualified_name(ns).fullname(None);
                self.names.insert(full.clone());
                self.defined.insert(full, schema);
            }
            Schema::Array(a) => self.define(&a.items, ns),
            Schema::Map(m) => self.define(&m.types, ns),
            Schema::Union(u) => {
                for v in u.variants() {
                    self.define(v, ns);
                }
            }
            _ => {}
        }
    }

    pub(super) fn resolve(&self, schema: &'s Schema, ns: Option<&str>) -> &'s Schema {
        match schema {
            Schema::Ref { name } => {
                let full = name.fully_qualified_name(ns).fullname(None);
                self.defined.get(&full).copied().unwrap_or(schema)
            }
            _ => schema,
        }
    }

    pub(super) fn type_change(&mut self, path: &str, schema: &Schema, json: &Json) {
        let what = match schema {
            Schema::Int if matches!(json, Json::Number(n) if n.is_i64() || n.is_u64()) => {
                "int, and samples hold integers out of its range".to_owned()
            }
            Schema::Long if matches!(json, Json::Number(n) if n.is_u64()) => {
                "long, and samples hold integers out of its range".to_owned()
            }
            _ => format!(
                "{}, and samples hold {}",
                type_name(schema),
                json_kind(json)
            ),
        };
        let at = if path.is_empty() {
            "the record".to_owned()
        } else {
            format!("field `{path}`")
        };
        self.blockers.insert(format!(
            "{at} is {what}: changing the type of an existing field is not proposed (it breaks \
             readers of the current version); fix upstream, or evolve the schema by hand"
        ));
    }

    pub(super) fn walk(&mut self, schema: &'s Schema, json: &Json, ns: Option<&str>, path: &str) {
        let schema = self.resolve(schema, ns);
        match (schema, json) {
            (Schema::Union(u), _) => {
                match u
                    .variants()
                    .iter()
                    .map(|v| self.resolve(v, ns))
                    .find(|v| fits(v, json))
                {
                    Some(branch) => self.walk(branch, json, ns, path),
                    None => self.type_change(path, schema, json),
                }
            }
            (Schema::Record(r), Json::Object(members)) => {
                let full = r.name.fully_qualified_name(ns);
                let full_name = full.fullname(None);
                let record_ns = full.namespace().map(str::to_owned);
                *self.record_count.entry(full_name.clone()).or_default() += 1;
                self.seen_at
                    .entry(full_name.clone())
                    .or_insert_with(|| (path.to_owned(), record_ns.clone()));
                for field in &r.fields {
                    let field_path = join(path, &field.name);
                    let required = field.default.is_none()
                        && !admits_null(self.resolve(&field.schema, record_ns.as_deref()));
                    match members.get(&field.name) {
                        None | Some(Json::Null) if required => {
                            let state = if members.contains_key(&field.name) {
                                "null"
                            } else {
                                "absent"
                            };
                            self.blockers.insert(format!(
                                "required field `{field_path}` is {state} in samples: making it optional \
                                 changes its type, which is not proposed; fix upstream, or give it a \
                                 default by hand"
                            ));
                        }
                        None | Some(Json::Null) => {}
                        Some(value) => {
                            self.walk(&field.schema, value, record_ns.as_deref(), &field_path)
                        }
                    }
                }
                for (name, value) in members {
                    if r.lookup.contains_key(name) {
                        continue;
                    }
                    if is_avro_name(name) {
                        let fields = self.new_fields.entry(full_name.clone()).or_default();
                        let (_, shape) = fields
                            .entry(name.clone())
                            .or_insert_with(|| (join(path, name), Shape::default()));
                        shape.merge(value);
                    } else {
                        self.blockers.insert(format!(
                            "new member {} of `{}` is not a valid Avro field name ([A-Za-z_][A-Za-z0-9_]*)",
                            Json::String(name.clone()),
                            if path.is_empty() { "the record" } else { path }
                        ));
                    }
                }
            }
            (Schema::Enum(e), Json::String(symbol)) => {
                if e.symbols.contains(symbol) {
                    return;
                }
                let full = e.name.fully_qualified_name(ns).fullname(None);
                if is_avro_name(symbol) {
                    self.seen_at
                        .entry(full.clone())
                        .or_insert_with(|| (path.to_owned(), None));
                    self.new_symbols
                        .entry(full)
                        .or_default()
                        .insert(symbol.clone());
                } else {
                    self.blockers.insert(format!(
                        "enum symbol {} at `{path}` is not a valid Avro name ([A-Za-z_][A-Za-z0-9_]*)",
                        Json::String(symbol.clone())
                    ));
                }
            }
            (Schema::Array(a), Json::Array(items)) => {
                let item_path = format!("{path}[]");
                for item in items {
                    self.walk(&a.items, item, ns, &item_path);
                }
            }
            (Schema::Map(m), Json::Object(members)) => {
                let value_path = format!("{path}{{}}");
                for value in members.values() {
                    self.walk(&m.types, value, ns, &value_path);
                }
            }
            _ if fits(schema, json) => {}
            _ => self.type_change(path, schema, json),
        }
    }

    /// Turns the observations into edits, naming new records and describing each change.
    pub(super) fn edits(&self, names: &mut HashSet<String>, changes: &mut Vec<String>) -> Edits {
        let mut edits = Edits::default();
        for (record, fields) in &self.new_fields {
            let ns = self.seen_at.get(record).and_then(|(_, ns)| ns.clone());
            let seen = self.record_count.get(record).copied().unwrap_or(0);
            let mut added = Vec::new();
            for (name, (path, shape)) in fields {
                let mut notes = Vec::new();
                let ty = Typer {
                    ns: ns.as_deref(),
                    names,
                    notes: &mut notes,
                }
                .field_type(shape, name);
                if shape.present == seen && !shape.null {
                    notes.push(
                        "present in every sample, but added as optional: a required field without a \
                         default would not be BACKWARD compatible"
                            .to_owned(),
                    );
                }
                let mut change =
                    format!("added optional field `{path}` of type {ty} with default null");
                if !notes.is_empty() {
                    change.push_str(&format!(" ({})", notes.join("; ")));
                }
                changes.push(change);
                added.push(json!({"name": name, "type": ty, "default": null}));
            }
            edits.fields.insert(record.clone(), added);
        }
        for (enumeration, symbols) in &self.new_symbols {
            let symbols: Vec<String> = symbols.iter().cloned().collect();
            let (path, _) = self.seen_at.get(enumeration).cloned().unwrap_or_default();
            let mut change = format!(
                "appended symbol{} {} to enum {enumeration} (field `{path}`)",
                if symbols.len() == 1 { "" } else { "s" },
                symbols
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(Schema::Enum(e)) = self.defined.get(enumeration)
                && let Some(default) = &e.default
            {
                change.push_str(&format!("; its default \"{default}\" is kept, so readers of older versions read new symbols as it"));
            }
            changes.push(change);
            edits.symbols.insert(enumeration.clone(), symbols);
        }
        edits
    }
}
