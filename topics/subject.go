package topics

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidSubject means a subject or pattern is malformed. The errors that
// wrap it say what is wrong, as in
//
//	agentbus: invalid subject: "a..b": empty token
var ErrInvalidSubject = errors.New("agentbus: invalid subject")

// MaxSubjectLen is the length, in bytes, of the longest subject or pattern that
// ValidateSubject and ValidatePattern accept.
const MaxSubjectLen = 256

// The wildcard tokens.
const (
	tokenOne  = "*" // exactly one token
	tokenRest = ">" // one or more trailing tokens
)

// ValidateSubject checks that s is a concrete subject that can be published
// to: non-empty, at most MaxSubjectLen bytes of valid UTF-8, made of non-empty
// dot-separated tokens, with no whitespace or control characters and no
// wildcard characters ('*' or '>') anywhere. It returns nil or an error
// wrapping ErrInvalidSubject. It is safe for concurrent use and does not
// allocate unless s is invalid.
func ValidateSubject(s string) error { return validate(s, false) }

// ValidatePattern checks that p is a subscription pattern: it follows the
// rules of ValidateSubject, except that a whole token may be "*", and the last
// token may be ">". It returns nil or an error wrapping ErrInvalidSubject. It
// is safe for concurrent use and does not allocate unless p is invalid.
func ValidatePattern(p string) error { return validate(p, true) }

// validate implements ValidateSubject (wild false) and ValidatePattern.
func validate(s string, wild bool) error {
	if s == "" {
		return invalid(s, "empty")
	}
	if len(s) > MaxSubjectLen {
		return invalid(s, fmt.Sprintf("%d bytes, limit %d", len(s), MaxSubjectLen))
	}
	start := 0        // the first byte of the current token
	reserved := false // whether the current token has a '*' or '>'
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '.':
			if err := validateToken(s, s[start:i], reserved, false, wild); err != nil {
				return err
			}
			i++
			start, reserved = i, false
		case c == '*' || c == '>':
			reserved = true
			i++
		case c <= ' ' || c == 0x7f:
			return invalid(s, fmt.Sprintf("whitespace or control character %q at byte %d", c, i))
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return invalid(s, fmt.Sprintf("invalid UTF-8 at byte %d", i))
			}
			if unicode.IsSpace(r) || unicode.IsControl(r) {
				return invalid(s, fmt.Sprintf("whitespace or control character %q at byte %d", r, i))
			}
			i += size
		}
	}
	return validateToken(s, s[start:], reserved, true, wild)
}

// validateToken checks one token tok of s. reserved says whether tok has a
// '*' or '>', and last whether it is the final token.
func validateToken(s, tok string, reserved, last, wild bool) error {
	switch {
	case tok == "":
		return invalid(s, "empty token")
	case !reserved:
		return nil
	case !wild && (tok == tokenOne || tok == tokenRest):
		return invalid(s, fmt.Sprintf("wildcard %q in a subject", tok))
	case tok == tokenOne && wild:
		return nil
	case tok == tokenRest && wild:
		if !last {
			return invalid(s, `">" must be the last token`)
		}
		return nil
	default:
		return invalid(s, fmt.Sprintf("reserved character '*' or '>' in token %q", tok))
	}
}

// invalid returns an error wrapping ErrInvalidSubject that quotes s, cut
// short if it is long, and says what is wrong.
func invalid(s, what string) error {
	const maxQuote = 64
	if len(s) > maxQuote {
		cut := maxQuote
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return fmt.Errorf("%w: %q: %s", ErrInvalidSubject, s, what)
}

// IsPattern reports whether p has a wildcard token ("*" or ">"), that is,
// whether it can match more than one subject. It does not validate p. It is
// safe for concurrent use and does not allocate.
func IsPattern(p string) bool {
	if p == "" {
		return false
	}
	for i := 0; i <= len(p); {
		tok, next := token(p, i)
		if tok == tokenOne || tok == tokenRest {
			return true
		}
		i = next
	}
	return false
}

// Match reports whether pattern matches subject. It compares tokens in order:
// "*" matches any one token, ">" as the last token matches one or more
// remaining tokens, and any other token must be equal. An empty pattern or
// subject matches nothing.
//
// Match does not validate its arguments; give it a pattern accepted by
// ValidatePattern and a subject accepted by ValidateSubject, or the answer is
// only the lexical comparison above. It is safe for concurrent use and does
// not allocate.
func Match(pattern, subject string) bool {
	if pattern == "" || subject == "" {
		return false
	}
	i, j := 0, 0 // the start of the current token of pattern and of subject
	for {
		switch {
		case i+1 == len(pattern) && pattern[i] == '>':
			return true // the subject has at least the token at j left
		case i < len(pattern) && pattern[i] == '*' && (i+1 == len(pattern) || pattern[i+1] == '.'):
			i++
			for j < len(subject) && subject[j] != '.' {
				j++
			}
		default:
			for i < len(pattern) && pattern[i] != '.' {
				if j == len(subject) || subject[j] != pattern[i] {
					return false
				}
				i++
				j++
			}
			if j < len(subject) && subject[j] != '.' {
				return false // the subject's token is longer
			}
		}
		// Both tokens have ended: i and j are at a dot or at the end.
		pEnd, sEnd := i == len(pattern), j == len(subject)
		if pEnd || sEnd {
			return pEnd && sEnd
		}
		i++
		j++
	}
}

// token returns the token of s that starts at byte i, and the start of the
// token after it, which is len(s)+1 if there is none. It must be called with
// 0 <= i <= len(s).
func token(s string, i int) (tok string, next int) {
	j := strings.IndexByte(s[i:], '.')
	if j < 0 {
		return s[i:], len(s) + 1
	}
	return s[i : i+j], i + j + 1
}
