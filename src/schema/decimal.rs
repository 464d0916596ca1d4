//! Exact decimals: a JSON number or numeric string → the decimal text of `decimal(P,S)`, or
//! why it does not fit. Nothing is rounded.

use serde_json::Value;

use crate::decode::json_type_name;

/// The exact decimal text of a number or numeric string with `scale` fraction digits, or why
/// it does not fit `decimal(precision, scale)`. Never rounds: extra non-zero digits are an
/// error, so no value is silently changed.
pub fn decimal_text(v: &Value, precision: u8, scale: u8) -> Result<String, String> {
    let text = match v {
        // A JSON number that is not an integer arrives as a 64-bit float, exact to 15
        // significant digits. More digits mean it may already be rounded: refuse rather than
        // write a value the producer did not send.
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
            let text = n.to_string();
            let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
            let significant = mantissa
                .trim_start_matches('-')
                .replace('.', "")
                .trim_start_matches('0')
                .trim_end_matches('0')
                .len();
            if significant > 15 {
                return Err(format!(
                    "{text} has more significant digits than a JSON number keeps exactly; \
                     send it as a string"
                ));
            }
            text
        }
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err(format!("expected a number, got {}", json_type_name(v))),
    };
    let bad = || format!("{text:?} is not a decimal number");
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(&text)),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| bad())?),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
        || exponent.abs() > 400
    {
        return Err(bad());
    }
    // All digits, and where the decimal point sits among them after the exponent.
    let digits: String = format!("{int_part}{frac_part}");
    let point = int_part.len() as i32 + exponent;
    let (int_digits, frac_digits): (String, String) = if point <= 0 {
        (String::new(), "0".repeat((-point) as usize) + &digits)
    } else if point as usize >= digits.len() {
        (
            digits.clone() + &"0".repeat(point as usize - digits.len()),
            String::new(),
        )
    } else {
        (
            digits[..point as usize].to_string(),
            digits[point as usize..].to_string(),
        )
    };
    let int_digits = int_digits.trim_start_matches('0');
    let frac_digits = frac_digits.trim_end_matches('0');
    if frac_digits.len() > scale as usize {
        return Err(format!(
            "{text} has more than {scale} digits after the point"
        ));
    }
    if int_digits.len() > (precision - scale) as usize {
        return Err(format!(
            "{text} has more than {} digits before the point",
            precision - scale
        ));
    }
    let int_digits = if int_digits.is_empty() {
        "0"
    } else {
        int_digits
    };
    let sign = if negative && (int_digits != "0" || !frac_digits.is_empty()) {
        "-"
    } else {
        ""
    };
    let pad = "0".repeat(scale as usize - frac_digits.len());
    Ok(if scale == 0 {
        format!("{sign}{int_digits}")
    } else {
        format!("{sign}{int_digits}.{frac_digits}{pad}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_are_exact_or_refused() {
        let d = |v: Value| decimal_text(&v, 6, 2);
        assert_eq!(d(json!(12.5)).unwrap(), "12.50");
        assert_eq!(d(json!("-0.10")).unwrap(), "-0.10");
        assert_eq!(d(json!(1e3)).unwrap(), "1000.00");
        assert_eq!(d(json!("2.5E-1")).unwrap(), "0.25");
        assert_eq!(d(json!(-0)).unwrap(), "0.00");
        assert!(d(json!(1.234)).unwrap_err().contains("after the point"));
        assert!(d(json!(12345)).unwrap_err().contains("before the point"));
        assert!(d(json!("1.2.3")).is_err());
        assert!(d(json!("")).is_err());
        let wide = |v: Value| decimal_text(&v, 38, 10);
        assert!(
            wide(json!(1234567890.123_456_7))
                .unwrap_err()
                .contains("as a string")
        );
        assert_eq!(
            wide(json!("1234567890.1234567891")).unwrap(),
            "1234567890.1234567891"
        );
        assert_eq!(
            wide(json!(u64::MAX)).unwrap(),
            "18446744073709551615.0000000000"
        );
    }
}
