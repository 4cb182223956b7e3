package routing_test

import (
	"fmt"
	"testing"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/routing"
)

// benchTable returns a table of n rules with a realistic mix of filters:
// three in ten by recipient, two by sender, two by literal topic, one and a
// half by wildcard topic, one by type alone and the rest catch-alls.
func benchTable(n int) *routing.Table {
	types := []actors.MessageType{actors.TypeDirect, actors.TypePublish, actors.TypeRequest, actors.TypeError}
	wild := []string{"agents.*.done", "events.>", "tasks.*.status", "agents.*.failed"}
	rules := make([]routing.Rule, 0, n)
	for i := range n {
		agent := fmt.Sprintf("agent%d", i%20)
		r := routing.Rule{
			ID:       fmt.Sprintf("rule%d", i),
			Handler:  fmt.Sprintf("handler%d", i%30),
			Priority: (i * 7) % 10,
			Enabled:  i%10 != 9,
		}
		switch i % 20 {
		case 0, 1, 2, 3, 4, 5:
			r.Recipient = agent
			if i%2 == 0 {
				r.Type = types[i%len(types)]
			}
		case 6, 7, 8, 9:
			r.Sender = agent
		case 10, 11, 12, 13:
			r.Topic = "agents." + agent + ".done"
		case 14, 15, 16:
			r.Topic = wild[i%len(wild)]
		case 17, 18:
			r.Type = types[i%len(types)]
		}
		rules = append(rules, r)
	}
	t, err := routing.NewTable(rules...)
	if err != nil {
		panic(err)
	}
	return t
}

// benchMessages are routed in turn.
func benchMessages() []*actors.Message {
	return []*actors.Message{
		{Type: actors.TypeDirect, Sender: "agent1", Recipient: "agent3"},
		{Type: actors.TypePublish, Sender: "agent4", Topic: "agents.agent4.done"},
		{Type: actors.TypeRequest, Sender: "agent7", Recipient: "agent2"},
		{Type: actors.TypePublish, Sender: "ui", Topic: "events.click.button"},
		{Type: actors.TypeHeartbeat, Sender: "agent0", Recipient: "monitor"},
		{Type: actors.TypeBroadcast, Sender: "agent12"},
	}
}

func BenchmarkRoute(b *testing.B) {
	msgs := benchMessages()
	for _, n := range []int{4, 8, 16, 100, 1000} {
		tab := benchTable(n)
		for _, impl := range []struct {
			name  string
			match func(*routing.Table, *actors.Message, []*routing.Rule) []*routing.Rule
		}{
			{"index", (*routing.Table).MatchIndex},
			{"scan", (*routing.Table).MatchScan},
		} {
			b.Run(fmt.Sprintf("rules=%d/%s", n, impl.name), func(b *testing.B) {
				dst := make([]*routing.Rule, 0, n)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					dst = impl.match(tab, msgs[i%len(msgs)], dst[:0])
					i++
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "routes/s")
			})
		}
	}
}

func BenchmarkTableWith(b *testing.B) {
	tab := benchTable(100)
	r := routing.Rule{ID: "extra", Handler: "h", Topic: "agents.*.done", Enabled: true}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tab.With(r); err != nil {
			b.Fatal(err)
		}
	}
}
