//! Human durations for the CLI: a number and a unit (s, m, h, d, w), e.g. `90m`, `24h`, `7d`.

pub fn parse(s: &str) -> Result<time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by s, m, h, d or w"))?;
    let d = match unit {
        "s" => time::Duration::seconds(n),
        "m" => time::Duration::minutes(n),
        "h" | "" => time::Duration::hours(n),
        "d" => time::Duration::days(n),
        "w" => time::Duration::weeks(n),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h, d or w)")),
    };
    if n <= 0 || n > 100_000 {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("30m"), Ok(time::Duration::minutes(30)));
        assert_eq!(parse("24h"), Ok(time::Duration::hours(24)));
        assert_eq!(parse("7d"), Ok(time::Duration::days(7)));
        assert_eq!(parse("2w"), Ok(time::Duration::weeks(2)));
        assert!(parse("7x").is_err());
        assert!(parse("d").is_err());
        assert!(parse("0d").is_err());
    }
}
