package routing

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/topics"
)

var (
	// ErrInvalidRule means a rule failed Rule.Validate.
	ErrInvalidRule = errors.New("agentbus: invalid rule")
	// ErrRuleExists means a table already has a rule with the same ID.
	ErrRuleExists = errors.New("agentbus: rule exists")
	// ErrRuleNotFound means a table has no rule with the given ID.
	ErrRuleNotFound = errors.New("agentbus: rule not found")
)

// MaxNameLen is the length, in bytes, of the longest rule ID, handler,
// sender or recipient name that Rule.Validate accepts.
const MaxNameLen = 256

// Rule sends the messages that pass its filters to a named handler. An empty
// (zero) filter matches every message.
type Rule struct {
	ID        string             // unique within a Table; required
	Type      actors.MessageType // the message type; 0 matches any type
	Sender    string             // the exact sender; "" matches any
	Recipient string             // the exact recipient; "" matches any
	Topic     string             // a subject or wildcard pattern (see topics.ValidatePattern); "" matches any
	Handler   string             // the name of the handler to run; required
	Priority  int                // higher is evaluated first; ties go in insertion order
	Enabled   bool               // only enabled rules match in a Table
}

// Validate checks r: an ID and a Handler that are not empty, an ID, Handler,
// Sender and Recipient of at most MaxNameLen bytes of valid UTF-8 without
// whitespace or control characters, a Type that is 0 or valid, and a Topic
// that is empty or a valid pattern. It returns nil or an error wrapping
// ErrInvalidRule that says what is wrong; for a bad topic the error also
// wraps topics.ErrInvalidSubject. It is safe for concurrent use.
func (r Rule) Validate() error {
	if err := checkName("id", r.ID, true); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalidRule, err)
	}
	if err := checkName("handler", r.Handler, true); err != nil {
		return fmt.Errorf("%w %q: %s", ErrInvalidRule, r.ID, err)
	}
	if err := checkName("sender", r.Sender, false); err != nil {
		return fmt.Errorf("%w %q: %s", ErrInvalidRule, r.ID, err)
	}
	if err := checkName("recipient", r.Recipient, false); err != nil {
		return fmt.Errorf("%w %q: %s", ErrInvalidRule, r.ID, err)
	}
	if r.Type != 0 && !r.Type.Valid() {
		return fmt.Errorf("%w %q: unknown message type %d", ErrInvalidRule, r.ID, uint8(r.Type))
	}
	if r.Topic != "" {
		if err := topics.ValidatePattern(r.Topic); err != nil {
			return fmt.Errorf("%w %q: topic: %w", ErrInvalidRule, r.ID, err)
		}
	}
	return nil
}

// checkName checks the name s of field, which may be empty unless required.
// Its error does not repeat s, which may be long or unprintable.
func checkName(field, s string, required bool) error {
	switch {
	case s == "" && required:
		return fmt.Errorf("empty %s", field)
	case len(s) > MaxNameLen:
		return fmt.Errorf("%s of %d bytes, limit %d", field, len(s), MaxNameLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", field)
	}
	for _, c := range s {
		if unicode.IsSpace(c) || unicode.IsControl(c) {
			return fmt.Errorf("%s has whitespace or control character %q", field, c)
		}
	}
	return nil
}

// Matches reports whether m passes every filter of r. It ignores r.Enabled
// and does not validate r or m; a nil m matches nothing. It is safe for
// concurrent use and does not allocate.
func (r Rule) Matches(m *actors.Message) bool { return r.matches(m) }

// matches implements Matches without copying r.
func (r *Rule) matches(m *actors.Message) bool {
	switch {
	case m == nil:
		return false
	case r.Type != 0 && r.Type != m.Type:
		return false
	case r.Sender != "" && r.Sender != m.Sender:
		return false
	case r.Recipient != "" && r.Recipient != m.Recipient:
		return false
	case r.Topic != "" && !topics.Match(r.Topic, m.Topic):
		return false
	}
	return true
}
