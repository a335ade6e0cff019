//! The patterns of MATCHES_PATTERN: SQL `LIKE` syntax (`%` any run of characters, `_` exactly
//! one character, `\` makes the next character literal), case-sensitive, over characters (not
//! bytes). The SQL evaluator hands the pattern to Postgres as `LIKE … ESCAPE '\'`; this module
//! matches it in Rust exactly so, and the evaluator proptest holds the two equal.
//!
//! Why not a regular expression: a rule is written by a marketer, evaluated on every event and
//! compiled into a full recompute; `LIKE` has no nested repetition, and the match below is the
//! greedy wildcard match that, on a mismatch, goes back only to the latest `%`: at most
//! O(text × pattern) steps, never exponential (`%a%a%a%a%a%a%a%b` against a long run of `a`s
//! is a few hundred thousand steps). Postgres' `LIKE` is the same kind of algorithm.

use std::fmt;

/// One element of a parsed pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `%`: any run of characters, the empty one included.
    AnyRun,
    /// `_`: exactly one character.
    AnyOne,
    /// A character that must be there, escaped or not.
    Literal(char),
}

/// A pattern that passed [`Pattern::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternError {
    /// The last character is a `\` escaping nothing (Postgres refuses it too).
    TrailingEscape,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::TrailingEscape => f.write_str(
                "pattern must not end with the escape character \\ (write \\\\ for a backslash)",
            ),
        }
    }
}

impl Pattern {
    /// Parses `LIKE` syntax with `\` as the escape character.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let mut tokens = Vec::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '%' => Token::AnyRun,
                '_' => Token::AnyOne,
                '\\' => Token::Literal(chars.next().ok_or(PatternError::TrailingEscape)?),
                c => Token::Literal(c),
            });
        }
        Ok(Self { tokens })
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let tokens = &self.tokens;
        let (mut t, mut p) = (0, 0);
        // The latest `%` seen: the token after it, and the text position it now stands at.
        let mut resume: Option<(usize, usize)> = None;
        while t < text.len() {
            match tokens.get(p) {
                Some(Token::AnyOne) => {
                    t += 1;
                    p += 1;
                }
                Some(Token::Literal(c)) if *c == text[t] => {
                    t += 1;
                    p += 1;
                }
                Some(Token::AnyRun) => {
                    // Try the empty run first; widen it one character per mismatch below.
                    p += 1;
                    resume = Some((p, t));
                }
                _ => match resume {
                    Some((after, from)) => {
                        p = after;
                        t = from + 1;
                        resume = Some((after, from + 1));
                    }
                    None => return false,
                },
            }
        }
        tokens[p..].iter().all(|token| *token == Token::AnyRun)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, text: &str, expected: bool) {
        let parsed = Pattern::parse(pattern);
        assert_eq!(
            parsed.as_ref().map(|p| p.matches(text)),
            Ok(expected),
            "{pattern:?} against {text:?}"
        );
    }

    #[test]
    fn like_syntax_matches_as_postgres_does() {
        check("abc", "abc", true);
        check("abc", "abcd", false);
        check("a%", "abc", true);
        check("%c", "abc", true);
        check("%b%", "abc", true);
        check("%", "", true);
        check("%%", "x", true);
        check("_", "", false);
        check("_", "上", true);
        check("__", "上", false);
        check("上_", "上海", true);
        check("a_c", "abc", true);
        check("a_c", "ac", false);
        check("%a%b", "aaab", true);
        check("%a%b", "aaba", false);
        check("A%", "abc", false);
        check("\\%%", "%off", true);
        check("\\%%", "off", false);
        check("100\\%", "100%", true);
        check("a\\_b", "a_b", true);
        check("a\\_b", "axb", false);
        check("\\\\", "\\", true);
        check("\\a", "a", true);
    }

    #[test]
    fn a_trailing_lone_escape_is_refused() {
        assert_eq!(Pattern::parse("abc\\"), Err(PatternError::TrailingEscape));
        assert_eq!(Pattern::parse("\\"), Err(PatternError::TrailingEscape));
        assert!(Pattern::parse("abc\\\\").is_ok());
    }

    /// The classic catastrophic case for backtracking matchers: it answers (false, then true)
    /// after at most text × pattern steps.
    #[test]
    fn many_runs_against_a_long_text_answer_without_blowing_up() -> Result<(), PatternError> {
        let long = "a".repeat(100_000);
        let pattern = Pattern::parse("%a%a%a%a%a%a%a%b")?;
        assert!(!pattern.matches(&long));
        assert!(pattern.matches(&format!("{long}b")));
        let underscores = Pattern::parse(&format!("{}%b", "_%".repeat(100)))?;
        assert!(!underscores.matches(&long));
        Ok(())
    }

    /// The definition, tried every way (exponential, so for short inputs only).
    fn reference(tokens: &[Token], text: &[char]) -> bool {
        match tokens.split_first() {
            None => text.is_empty(),
            Some((Token::AnyRun, rest)) => (0..=text.len()).any(|i| reference(rest, &text[i..])),
            Some((Token::AnyOne, rest)) => !text.is_empty() && reference(rest, &text[1..]),
            Some((Token::Literal(c), rest)) => {
                text.first() == Some(c) && reference(rest, &text[1..])
            }
        }
    }

    /// Every pattern of up to 5 symbols over {a, b, %, _} against every text of up to 5
    /// characters over {a, b}: the greedy match agrees with the definition.
    #[test]
    fn greedy_match_agrees_with_the_definition_exhaustively() {
        fn words(alphabet: &[char], max: usize) -> Vec<String> {
            let mut all = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                    .collect();
                all.extend(last.iter().cloned());
            }
            all
        }
        let texts = words(&['a', 'b'], 5);
        for pattern in words(&['a', 'b', '%', '_'], 5) {
            let Ok(parsed) = Pattern::parse(&pattern) else {
                continue;
            };
            for text in &texts {
                let chars: Vec<char> = text.chars().collect();
                assert_eq!(
                    parsed.matches(text),
                    reference(&parsed.tokens, &chars),
                    "{pattern:?} against {text:?}"
                );
            }
        }
    }
}
