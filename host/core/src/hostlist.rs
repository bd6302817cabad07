//! Hostlists: `n[001-100]`, `n[1-3,7]`, `rack[1-2]-n[01-04]` (every combination), and comma
//! lists of those (`head,n[1-4]`). Zero padding is kept: `n[008-010]` is n008, n009, n010.

/// More names than this from one pattern is almost certainly a typo.
pub const MAX_NAMES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostlistError {
    #[error("hostlist {pattern:?}: {reason}")]
    Invalid { pattern: String, reason: String },
}

fn invalid(pattern: &str, reason: impl Into<String>) -> HostlistError {
    HostlistError::Invalid {
        pattern: pattern.to_string(),
        reason: reason.into(),
    }
}

/// Splits on commas that are not inside brackets.
fn top_level_items(pattern: &str) -> Result<Vec<&str>, HostlistError> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in pattern.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(invalid(pattern, "nested brackets")),
            ']' if depth == 1 => depth = 0,
            ']' => return Err(invalid(pattern, "`]` without `[`")),
            ',' if depth == 0 => {
                items.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(invalid(pattern, "`[` is never closed"));
    }
    items.push(&pattern[start..]);
    Ok(items)
}

/// The numbers of one bracket group, formatted with their padding.
fn group(pattern: &str, body: &str) -> Result<Vec<String>, HostlistError> {
    let mut out = Vec::new();
    for range in body.split(',') {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| {
                    invalid(
                        pattern,
                        format!("{range:?} is not a number or a range like 001-100"),
                    )
                })
        };
        let (from, to) = (number(first)?, number(last)?);
        if from > to {
            return Err(invalid(pattern, format!("range {range:?} runs backwards")));
        }
        if to - from >= MAX_NAMES as u64 {
            return Err(invalid(
                pattern,
                format!("range {range:?} has more than {MAX_NAMES} names"),
            ));
        }
        let width = if first.starts_with('0') {
            first.len()
        } else {
            0
        };
        out.extend((from..=to).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

/// Every name a hostlist stands for, in order, without duplicates.
pub fn expand(pattern: &str) -> Result<Vec<String>, HostlistError> {
    let mut names: Vec<String> = Vec::new();
    for item in top_level_items(pattern.trim())? {
        if item.is_empty() {
            return Err(invalid(pattern, "empty name"));
        }
        let mut partial = vec![String::new()];
        let mut rest = item;
        while !rest.is_empty() {
            let (literal, after) = match rest.find('[') {
                Some(open) => (&rest[..open], Some(&rest[open + 1..])),
                None => (rest, None),
            };
            partial.iter_mut().for_each(|p| p.push_str(literal));
            let Some(after) = after else { break };
            let close = after
                .find(']')
                .ok_or_else(|| invalid(pattern, "`[` is never closed"))?;
            let numbers = group(pattern, &after[..close])?;
            if partial.len().saturating_mul(numbers.len()) > MAX_NAMES {
                return Err(invalid(pattern, format!("more than {MAX_NAMES} names")));
            }
            partial = partial
                .iter()
                .flat_map(|p| numbers.iter().map(move |n| format!("{p}{n}")))
                .collect();
            rest = &after[close + 1..];
        }
        for name in partial {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.len() > MAX_NAMES {
            return Err(invalid(pattern, format!("more than {MAX_NAMES} names")));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(pattern: &str) -> Vec<String> {
        expand(pattern).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn ranges_lists_padding_and_products() {
        assert_eq!(names("n[008-011]"), ["n008", "n009", "n010", "n011"]);
        assert_eq!(names("n[1-3,7]"), ["n1", "n2", "n3", "n7"]);
        assert_eq!(names("head,gpu[1-2]"), ["head", "gpu1", "gpu2"]);
        assert_eq!(
            names("r[1-2]-n[01-02]"),
            ["r1-n01", "r1-n02", "r2-n01", "r2-n02"]
        );
        assert_eq!(names("n[9-10]"), ["n9", "n10"]);
        assert_eq!(names("plain"), ["plain"]);
        assert_eq!(names("n[1-2],n[2-3]"), ["n1", "n2", "n3"]);
        assert_eq!(names("n[001-100]").len(), 100);
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        let err = |p: &str| expand(p).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(err("n[1-3"), "hostlist \"n[1-3\": `[` is never closed");
        assert_eq!(
            err("n[3-1]"),
            "hostlist \"n[3-1]\": range \"3-1\" runs backwards"
        );
        assert_eq!(
            err("n[a-b]"),
            "hostlist \"n[a-b]\": \"a-b\" is not a number or a range like 001-100"
        );
        assert_eq!(err("n1,,n2"), "hostlist \"n1,,n2\": empty name");
        assert_eq!(err("n[[1]]"), "hostlist \"n[[1]]\": nested brackets");
        assert_eq!(
            err("n[0-999999]"),
            "hostlist \"n[0-999999]\": range \"0-999999\" has more than 100000 names"
        );
        assert_eq!(
            err("a[0-999]b[0-999]"),
            "hostlist \"a[0-999]b[0-999]\": more than 100000 names"
        );
    }
}
