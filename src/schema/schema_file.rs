//! `schema_file`: declared columns from an Arrow JSON schema or a Parquet message type.
//!
//! Arrow JSON is the schema part of Arrow's JSON integration format
//! (`{"fields": [{"name", "nullable", "type": {"name": "int", "bitWidth": 64, ...},
//! "children": [...]}]}`); a Parquet message type is the text `parquet-tools schema` prints
//! (`message m { required int64 id; ... }`).

use std::sync::Arc;

use arrow::datatypes::DataType;
use parquet::arrow::parquet_to_arrow_schema;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::SchemaDescriptor;
use serde_json::Value;

use super::declared::{Column, MAX_DECIMAL_PRECISION, Ty};

/// Reads columns from the text of a schema file; the error names the field that is wrong.
pub fn parse_schema_text(text: &str) -> Result<Vec<Column>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let schema = json.get("schema").unwrap_or(&json);
        let fields = schema
            .get("fields")
            .and_then(Value::as_array)
            .ok_or("an Arrow JSON schema needs a \"fields\" array")?;
        fields.iter().map(|f| arrow_json_field(f, "")).collect()
    } else if trimmed.starts_with("message") {
        let message = parse_message_type(text).map_err(|e| format!("Parquet schema: {e}"))?;
        let descr = SchemaDescriptor::new(Arc::new(message));
        let arrow =
            parquet_to_arrow_schema(&descr, None).map_err(|e| format!("Parquet schema: {e}"))?;
        arrow
            .fields()
            .iter()
            .map(|f| {
                Ok(Column {
                    name: f.name().clone(),
                    ty: from_arrow(f.data_type(), f.name())?,
                    nullable: f.is_nullable(),
                })
            })
            .collect()
    } else {
        Err(
            "expected an Arrow JSON schema ({\"fields\": [...]}) or a Parquet message type \
             (message name { ... })"
                .to_string(),
        )
    }
}

fn arrow_json_field(f: &Value, prefix: &str) -> Result<Column, String> {
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a field under {prefix:?} has no \"name\""))?;
    let path = if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    };
    let nullable = f.get("nullable").and_then(Value::as_bool).unwrap_or(true);
    let ty = f
        .get("type")
        .ok_or_else(|| format!("field {path:?} has no \"type\""))?;
    let type_name = ty.get("name").and_then(Value::as_str).unwrap_or_default();
    let children = || -> Result<Vec<Column>, String> {
        f.get("children")
            .and_then(Value::as_array)
            .map(|c| c.iter().map(|c| arrow_json_field(c, &path)).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    };
    let int = |key: &str| ty.get(key).and_then(Value::as_u64);
    let ty = match type_name {
        "bool" => Ty::Bool,
        "int" => match (int("bitWidth"), ty.get("isSigned").and_then(Value::as_bool)) {
            (Some(8 | 16 | 32), Some(true)) | (Some(8 | 16), Some(false)) => Ty::Int32,
            (Some(64), Some(true)) | (Some(32), Some(false)) => Ty::Int64,
            _ => {
                return Err(format!(
                    "field {path:?}: unsigned 64-bit integers are not supported; declare int64 or decimal(20,0)"
                ));
            }
        },
        "floatingpoint" => match ty.get("precision").and_then(Value::as_str) {
            Some("HALF" | "SINGLE") => Ty::Float32,
            _ => Ty::Float64,
        },
        "utf8" | "largeutf8" | "utf8view" => Ty::Str,
        "timestamp" => Ty::Timestamp,
        "date" => Ty::Date,
        "decimal" => {
            let precision = int("precision").unwrap_or(0);
            let scale = int("scale").unwrap_or(0);
            if !(1..=u64::from(MAX_DECIMAL_PRECISION)).contains(&precision) || scale > precision {
                return Err(format!(
                    "field {path:?}: decimal({precision},{scale}) is outside 1-38 digits"
                ));
            }
            Ty::Decimal {
                precision: precision as u8,
                scale: scale as u8,
            }
        }
        "list" | "largelist" => {
            let item = children()?
                .into_iter()
                .next()
                .ok_or_else(|| format!("field {path:?}: a list needs one child"))?;
            Ty::List(Box::new(item.ty))
        }
        "struct" => Ty::Struct(children()?),
        other => {
            return Err(format!(
                "field {path:?}: Arrow type {other:?} is not supported"
            ));
        }
    };
    Ok(Column {
        name: name.to_string(),
        ty,
        nullable,
    })
}

fn from_arrow(t: &DataType, path: &str) -> Result<Ty, String> {
    Ok(match t {
        DataType::Boolean => Ty::Bool,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            Ty::Int32
        }
        DataType::Int64 | DataType::UInt32 => Ty::Int64,
        DataType::Float16 | DataType::Float32 => Ty::Float32,
        DataType::Float64 => Ty::Float64,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ty::Str,
        DataType::Timestamp(_, _) => Ty::Timestamp,
        DataType::Date32 | DataType::Date64 => Ty::Date,
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s)
            if *p <= MAX_DECIMAL_PRECISION && *s >= 0 && (*s as u8) <= *p =>
        {
            Ty::Decimal {
                precision: *p,
                scale: *s as u8,
            }
        }
        DataType::List(item) | DataType::LargeList(item) => {
            Ty::List(Box::new(from_arrow(item.data_type(), path)?))
        }
        DataType::Struct(fields) => Ty::Struct(
            fields
                .iter()
                .map(|f| {
                    let child = format!("{path}.{}", f.name());
                    Ok(Column {
                        name: f.name().clone(),
                        ty: from_arrow(f.data_type(), &child)?,
                        nullable: f.is_nullable(),
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
        other => return Err(format!("field {path:?}: type {other} is not supported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::declared::parse_type;

    #[test]
    fn reads_a_parquet_message_type() {
        let cols = parse_schema_text(
            "message event {
               required int64 id;
               optional binary name (STRING);
               optional int64 at (TIMESTAMP(MICROS,true));
               optional int32 day (DATE);
               optional fixed_len_byte_array(16) price (DECIMAL(20,4));
               optional group tags (LIST) { repeated group list { optional binary element (STRING); } }
             }",
        )
        .unwrap();
        let shown: Vec<String> = cols
            .iter()
            .map(|c| format!("{} {} {}", c.name, c.ty, c.nullable))
            .collect();
        assert_eq!(
            shown,
            [
                "id int64 false",
                "name string true",
                "at timestamp true",
                "day date true",
                "price decimal(20,4) true",
                "tags list<string> true"
            ]
        );
    }

    #[test]
    fn reads_an_arrow_json_schema() {
        let cols = parse_schema_text(
            r#"{"fields": [
                {"name": "id", "nullable": false, "type": {"name": "int", "bitWidth": 64, "isSigned": true}, "children": []},
                {"name": "user", "nullable": true, "type": {"name": "struct"}, "children": [
                    {"name": "name", "nullable": true, "type": {"name": "utf8"}, "children": []}]},
                {"name": "scores", "nullable": true, "type": {"name": "list"}, "children": [
                    {"name": "item", "nullable": true, "type": {"name": "floatingpoint", "precision": "DOUBLE"}, "children": []}]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(cols[0].ty, Ty::Int64);
        assert!(!cols[0].nullable);
        assert_eq!(cols[1].ty, parse_type("struct<name: string>").unwrap());
        assert_eq!(cols[2].ty, parse_type("list<float64>").unwrap());
        let err = parse_schema_text(r#"{"fields": [{"name": "b", "type": {"name": "binary"}}]}"#)
            .unwrap_err();
        assert!(err.contains("\"b\"") && err.contains("binary"), "{err}");
        assert!(parse_schema_text("id int64").is_err());
    }
}
