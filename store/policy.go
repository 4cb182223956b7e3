package store

import "fmt"

// Policy says when a Commit counts as committed (see the package doc).
type Policy uint8

// The policies. The zero Policy is Batch.
const (
	// Batch: group commit; one fsync for the commits that arrive together.
	Batch Policy = iota
	// Always: one transaction and fsync per commit.
	Always
	// None: no fsync; survives a process crash, not an OS crash.
	None
)

// String returns the policy's name: "batch", "always" or "none".
func (p Policy) String() string {
	switch p {
	case Batch:
		return "batch"
	case Always:
		return "always"
	case None:
		return "none"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// ParsePolicy returns the policy named s ("batch", "always" or "none"), or
// an error wrapping ErrInvalidOp.
func ParsePolicy(s string) (Policy, error) {
	for _, p := range []Policy{Batch, Always, None} {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%w: commit policy %q is not batch, always or none", ErrInvalidOp, s)
}
