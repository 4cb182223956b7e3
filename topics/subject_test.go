package topics_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/topics"
)

// validSubjects are accepted by both ValidateSubject and ValidatePattern.
var validSubjects = []string{
	"a",
	"agents.coder.done",
	"a.b.c.d.e.f.g.h",
	"A.b",
	"1.2.3",
	"a-b_c.d:e",
	"$SYS.agents",
	"a/b.c|d",
	"ñ.日本.ü",
	"emoji.🚀.done",
	"a#b",
	strings.Repeat("a", topics.MaxSubjectLen),
	strings.Repeat("a.", topics.MaxSubjectLen/2-1) + "bb",
}

func TestValidateSubject(t *testing.T) {
	tests := []struct {
		name     string
		give     string
		wantText string // part of the error; "" means valid
	}{
		{name: "empty", give: "", wantText: `"": empty`},
		{name: "only dot", give: ".", wantText: "empty token"},
		{name: "leading dot", give: ".a", wantText: "empty token"},
		{name: "trailing dot", give: "a.", wantText: "empty token"},
		{name: "double dot", give: "a..b", wantText: `"a..b": empty token`},
		{name: "space", give: "a b", wantText: "whitespace or control character ' ' at byte 1"},
		{name: "leading space", give: " a", wantText: "whitespace"},
		{name: "tab", give: "a\tb", wantText: "whitespace"},
		{name: "newline", give: "a.b\n", wantText: "whitespace"},
		{name: "nul", give: "a\x00b", wantText: "control character"},
		{name: "del", give: "a\x7f", wantText: "control character"},
		{name: "no-break space", give: "a\u00a0b", wantText: "whitespace"},
		{name: "line separator", give: "a\u2028b", wantText: "whitespace"},
		{name: "ideographic space", give: "日\u3000本", wantText: "whitespace"},
		{name: "C1 control", give: "a\u0085b", wantText: "control character"},
		{name: "invalid UTF-8", give: "a.\xff", wantText: "invalid UTF-8 at byte 2"},
		{name: "truncated UTF-8", give: "a\xc3", wantText: "invalid UTF-8"},
		{name: "surrogate half", give: "a\xed\xa0\x80", wantText: "invalid UTF-8"},
		{name: "star", give: "*", wantText: `wildcard "*" in a subject`},
		{name: "star token", give: "a.*.c", wantText: `wildcard "*"`},
		{name: "gt", give: ">", wantText: `wildcard ">"`},
		{name: "gt last", give: "a.>", wantText: `wildcard ">"`},
		{name: "star inside token", give: "a*b", wantText: `reserved character '*' or '>' in token "a*b"`},
		{name: "gt inside token", give: "a.b>", wantText: "reserved character"},
		{name: "double star", give: "**", wantText: "reserved character"},
		{name: "too long", give: strings.Repeat("a", topics.MaxSubjectLen+1), wantText: "257 bytes, limit 256"},
	}
	for _, s := range validSubjects {
		tests = append(tests, struct {
			name     string
			give     string
			wantText string
		}{name: "valid " + shorten(s), give: s})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := topics.ValidateSubject(tt.give)
			if tt.wantText == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, topics.ErrInvalidSubject)
			assert.Contains(t, err.Error(), tt.wantText)
			assert.True(t, strings.HasPrefix(err.Error(), "agentbus: invalid subject: "), err.Error())
		})
	}
}

func TestValidateSubjectMessage(t *testing.T) {
	err := topics.ValidateSubject("a..b")
	require.EqualError(t, err, `agentbus: invalid subject: "a..b": empty token`)

	// A long subject is quoted only in part.
	err = topics.ValidateSubject(strings.Repeat("ü", 200))
	require.ErrorIs(t, err, topics.ErrInvalidSubject)
	assert.Less(t, len(err.Error()), 120, err.Error())
	assert.Contains(t, err.Error(), `..."`)
}

func TestValidatePattern(t *testing.T) {
	tests := []struct {
		name     string
		give     string
		wantText string // part of the error; "" means valid
	}{
		{name: "star", give: "*"},
		{name: "gt", give: ">"},
		{name: "star last", give: "a.*"},
		{name: "star first", give: "*.done"},
		{name: "star middle", give: "agents.*.done"},
		{name: "stars", give: "*.*.*"},
		{name: "gt last", give: "events.>"},
		{name: "star then gt", give: "*.>"},
		{name: "unicode and star", give: "日本.*.ü"},
		{name: "empty", give: "", wantText: "empty"},
		{name: "empty token", give: "a..*", wantText: "empty token"},
		{name: "trailing dot after star", give: "a.*.", wantText: "empty token"},
		{name: "leading dot", give: ".>", wantText: "empty token"},
		{name: "gt first", give: ">.a", wantText: `">" must be the last token`},
		{name: "gt middle", give: "a.>.b", wantText: "must be the last token"},
		{name: "two gts", give: "a.>.>", wantText: "must be the last token"},
		{name: "star suffix", give: "a*", wantText: "reserved character"},
		{name: "star prefix", give: "*a", wantText: "reserved character"},
		{name: "star in token", give: "a.b*c", wantText: "reserved character"},
		{name: "gt in token", give: "a.b>", wantText: "reserved character"},
		{name: "double gt", give: ">>", wantText: "reserved character"},
		{name: "star gt", give: "*>", wantText: "reserved character"},
		{name: "space", give: "a b.*", wantText: "whitespace"},
		{name: "control", give: "*.\x01", wantText: "control character"},
		{name: "invalid UTF-8", give: "*.\xfe", wantText: "invalid UTF-8"},
		{name: "too long", give: strings.Repeat("*.", 128) + "a", wantText: "limit 256"},
	}
	for _, s := range validSubjects {
		tests = append(tests, struct {
			name     string
			give     string
			wantText string
		}{name: "valid " + shorten(s), give: s})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := topics.ValidatePattern(tt.give)
			if tt.wantText == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, topics.ErrInvalidSubject)
			assert.Contains(t, err.Error(), tt.wantText)
		})
	}
}

func TestIsPattern(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{give: "", want: false},
		{give: "a", want: false},
		{give: "a.b.c", want: false},
		{give: "a*b", want: false}, // invalid, and not a wildcard token
		{give: "a.b>", want: false},
		{give: "*", want: true},
		{give: ">", want: true},
		{give: "a.*", want: true},
		{give: "*.a", want: true},
		{give: "a.*.c", want: true},
		{give: "a.>", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			assert.Equal(t, tt.want, topics.IsPattern(tt.give))
		})
	}
}

// matchTests are shared by TestMatch and TestTreeMatchTable.
var matchTests = []struct {
	pattern, subject string
	want             bool
}{
	// Literal patterns.
	{"a", "a", true},
	{"a", "b", false},
	{"a.b.c", "a.b.c", true},
	{"a.b.c", "a.b", false},
	{"a.b", "a.b.c", false},
	{"a.b", "a.bc", false},
	{"a.bc", "a.b", false},
	{"ab", "a.b", false},
	{"a.b", "ab", false},
	{"foo.bar", "foo", false},
	{"A", "a", false},
	// "*" at the start, middle and end.
	{"*", "a", true},
	{"*", "a.b", false},
	{"*.b.c", "a.b.c", true},
	{"*.b.c", "a.x.c", false},
	{"*.b.c", "b.c", false},
	{"a.*.c", "a.x.c", true},
	{"a.*.c", "a.c", false},
	{"a.*.c", "a.x.y.c", false},
	{"a.*.c", "a.x.d", false},
	{"a.b.*", "a.b.c", true},
	{"a.b.*", "a.b", false},
	{"a.b.*", "a.b.c.d", false},
	{"*.*", "a.b", true},
	{"*.*", "a", false},
	{"*.*", "a.b.c", false},
	{"agents.*.done", "agents.coder.done", true},
	{"agents.*.done", "agents.coder.failed", false},
	// ">" edge cases.
	{">", "a", true},
	{">", "a.b.c", true},
	{"events.>", "events", false},
	{"events.>", "events.a", true},
	{"events.>", "events.a.b", true},
	{"events.>", "eventsx.a", false},
	{"events.>", "event.a", false},
	{"events.>", "x.events.a", false},
	{"*.>", "a", false},
	{"*.>", "a.b", true},
	{"*.>", "a.b.c", true},
	{"a.*.>", "a.b", false},
	{"a.*.>", "a.b.c", true},
	{"a.b.>", "a.b.c.d.e.f", true},
	{"a.b.>", "a.c.d", false},
	// Unicode tokens.
	{"日本.*", "日本.東京", true},
	{"日本.*", "日本", false},
	{"ñ.>", "ñ.a.ü", true},
	{"ü", "u", false},
	{"*.🚀", "emoji.🚀", true},
	// A wildcard token matches a subject token of the same text.
	{"a.*", "a.*", true},
	{"a.>", "a.>", true},
	// Empty input matches nothing.
	{"", "", false},
	{"", "a", false},
	{"a", "", false},
	{">", "", false},
	{"*", "", false},
}

func TestMatch(t *testing.T) {
	for _, tt := range matchTests {
		t.Run(tt.pattern+" "+tt.subject, func(t *testing.T) {
			assert.Equal(t, tt.want, topics.Match(tt.pattern, tt.subject))
			assert.Equal(t, tt.want, splitMatch(tt.pattern, tt.subject), "reference matcher disagrees with the table")
		})
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	var matched, pattern bool
	allocs := testing.AllocsPerRun(100, func() {
		matched = topics.Match("agents.*.>", "agents.coder.done.now")
		pattern = topics.IsPattern("agents.coder.done")
	})
	assert.Zero(t, allocs)
	assert.True(t, matched)
	assert.False(t, pattern)
}

func TestValidateDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		_ = topics.ValidateSubject("agents.coder.done")
		_ = topics.ValidatePattern("agents.*.>")
	})
	assert.Zero(t, allocs)
}

// splitMatch is an independent, slow reference for topics.Match on valid
// input.
func splitMatch(pattern, subject string) bool {
	if pattern == "" || subject == "" {
		return false
	}
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" && i == len(p)-1 {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func shorten(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}

func FuzzValidatePattern(f *testing.F) {
	for _, s := range validSubjects {
		f.Add(s)
	}
	for _, s := range []string{"", "*", ">", "a.*", "a.>", "*.>", "a..b", ">.a", "a*b", "a\x00", "\xff", " ", "a.*.>", "日本.*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		perr := topics.ValidatePattern(p)
		serr := topics.ValidateSubject(p)
		if perr != nil {
			require.ErrorIs(t, perr, topics.ErrInvalidSubject)
			require.Error(t, serr, "a subject must also be a valid pattern")
			var tree topics.Tree[int]
			_, err := tree.Insert(p, 1)
			require.ErrorIs(t, err, topics.ErrInvalidSubject)
			require.False(t, tree.Remove(p, 1))
			return
		}
		if serr == nil {
			require.False(t, topics.IsPattern(p))
		} else {
			require.ErrorIs(t, serr, topics.ErrInvalidSubject)
		}
		require.True(t, topics.Match(p, p), "a pattern matches its own text")

		var tree topics.Tree[int]
		added, err := tree.Insert(p, 1)
		require.NoError(t, err)
		require.True(t, added)
		require.Equal(t, []string{p}, tree.Patterns())
		require.Equal(t, []int{1}, tree.Match(p, nil))
		require.True(t, tree.Remove(p, 1))
		require.Zero(t, tree.Len())
		require.Equal(t, 1, topics.NodeCount(&tree), "Remove must prune every node")
	})
}

func FuzzMatch(f *testing.F) {
	for _, tt := range matchTests {
		f.Add(tt.pattern, tt.subject)
	}
	f.Add("a.", "a.")
	f.Add("a..*", "a..b")
	f.Fuzz(func(t *testing.T, pattern, subject string) {
		got := topics.Match(pattern, subject)
		require.Equal(t, splitMatch(pattern, subject), got)
		if topics.ValidatePattern(pattern) != nil {
			return
		}
		var tree topics.Tree[int]
		_, err := tree.Insert(pattern, 1)
		require.NoError(t, err)
		require.Equal(t, got, len(tree.Match(subject, nil)) == 1, "Tree.Match disagrees with Match")
	})
}
