//! Human durations on the command line: `90s`, `30m`, `12h`, `7d`.

use std::time::Duration;

pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 12h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use s, m, h or d")),
    };
    if secs == 0 {
        return Err("a duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_units() {
        assert_eq!(super::parse("90").unwrap().as_secs(), 90);
        assert_eq!(super::parse("30m").unwrap().as_secs(), 1800);
        assert_eq!(super::parse("7d").unwrap().as_secs(), 604_800);
        assert!(super::parse("1w").is_err());
        assert!(super::parse("0s").is_err());
    }
}
