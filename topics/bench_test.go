package topics_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/descartes/agentbus/topics"
)

var benchEvents = []string{"done", "started", "failed", "progress"}

// benchPairs returns n (pattern, value) subscriptions in a realistic mix: six
// in ten exact agent subjects, and the rest wildcards over agents, events and
// tasks.
func benchPairs(n int) (patterns []string, values []int) {
	agents := max(n/10, 1)
	for i := range n {
		var p string
		agent := (i / 10) % agents // each agent gets one subscription of each kind
		ev := benchEvents[i%len(benchEvents)]
		switch i % 10 {
		case 0, 1, 2, 3, 4, 5:
			p = fmt.Sprintf("agents.coder%d.%s", agent, ev)
		case 6:
			p = fmt.Sprintf("agents.coder%d.>", agent)
		case 7:
			p = "agents.*." + ev
		case 8:
			p = fmt.Sprintf("events.kind%d.*", i%20)
		default:
			if i%20 == 9 {
				p = "events.>"
			} else {
				p = fmt.Sprintf("tasks.%d.status", i)
			}
		}
		patterns = append(patterns, p)
		values = append(values, i)
	}
	return patterns, values
}

func benchTree(n int) *topics.Tree[int] {
	var tree topics.Tree[int]
	patterns, values := benchPairs(n)
	for i, p := range patterns {
		if _, err := tree.Insert(p, values[i]); err != nil {
			panic(err)
		}
	}
	return &tree
}

// benchSubjects are published to in turn: hits on exact and wildcard
// patterns, and misses.
var benchSubjects = []string{
	"agents.coder17.done",
	"agents.coder3.progress",
	"agents.coder999999.failed",
	"events.kind7.created",
	"events.audit.login.ok",
	"tasks.19.status",
	"metrics.cpu",
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("patterns=%d", n), func(b *testing.B) {
			b.Run("tree", func(b *testing.B) {
				tree := benchTree(n)
				dst := make([]int, 0, n)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					dst = tree.Match(benchSubjects[i%len(benchSubjects)], dst[:0])
					i++
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "matches/s")
			})
			b.Run("scan", func(b *testing.B) {
				patterns, values := benchPairs(n)
				dst := make([]int, 0, n)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					subject := benchSubjects[i%len(benchSubjects)]
					dst = dst[:0]
					for j, p := range patterns {
						if topics.Match(p, subject) && !slices.Contains(dst, values[j]) {
							dst = append(dst, values[j])
						}
					}
					i++
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "matches/s")
			})
		})
	}
}

func BenchmarkMatchFunc(b *testing.B) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		topics.Match("agents.*.>", benchSubjects[i%len(benchSubjects)])
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "matches/s")
}

func BenchmarkValidateSubject(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := topics.ValidateSubject("agents.coder17.done"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTreeInsertRemove(b *testing.B) {
	tree := benchTree(1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tree.Insert("agents.coder17.extra.*", 1); err != nil {
			b.Fatal(err)
		}
		tree.Remove("agents.coder17.extra.*", 1)
	}
}
