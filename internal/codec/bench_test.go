package codec

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// benchTask is a small (~120 byte) agent task message.
var benchTask = []byte(`{"task":"summarize","doc":"reports/q3-revenue.md","budget":{"tokens":4000,"seconds":30},"tags":["finance","urgent"]}`)

// benchKiB is a ~1 KiB agent result with nested arrays and objects,
// escapes, unicode and assorted numbers.
var benchKiB = []byte(`{"id":"7f3c9a12-5b4e-4d2a-9c1f-0e8b6d4a2f17","agent":"summarizer-v2","status":"completed",` +
	`"started_at":"2024-10-01T12:00:00Z","elapsed_ms":1834.25,"attempt":1,"ok":true,"error":null,` +
	`"usage":{"prompt_tokens":3127,"completion_tokens":412,"cost_usd":0.01873,"ratio":-1.5e-3},` +
	`"result":{"title":"Q3 revenue summary","summary":"Revenue grew 12.4% quarter-over-quarter,\ndriven by ` +
	`\"enterprise\" renewals (EMEA +18%) and a one-off \u00a3 2.1M licence deal.\tMargins were flat.",` +
	`"highlights":["Enterprise ARR up 21%","Churn down to 1.9%","Cash: $48.2M","Café expansion \u2013 Zürich"],` +
	`"figures":[[2024,3,41.7,0.124],[2024,2,37.1,0.087],[2024,1,34.1,-0.012],[2023,4,34.5,0.05]],` +
	`"sources":[{"path":"reports/q3-revenue.md","lines":[12,48],"score":0.93},` +
	`{"path":"reports/q2-revenue.md","lines":[3,9],"score":0.71},{"path":"C:\\data\\ledger.csv","lines":[],"score":0.4}]},` +
	`"tags":["finance","urgent","quarterly"],"trace":{"parent":"root","spans":[{"name":"fetch","ms":120},` +
	`{"name":"chunk","ms":35},{"name":"llm","ms":1602},{"name":"verify","ms":77}]},"notes":"✓ reviewed by agent/qa-1"}`)

// bench64K is a ~64 KiB document: an array of pretty-printed records.
var bench64K = func() []byte {
	var sb strings.Builder
	sb.WriteString("[\n")
	for i := 0; sb.Len() < 64<<10-600; i++ {
		if i > 0 {
			sb.WriteString(",\n")
		}
		fmt.Fprintf(&sb, `  {
    "seq": %d,
    "from": "agent-%d",
    "to": ["agent-%d", "broker"],
    "kind": "task.result",
    "score": %g,
    "payload": {"text": "line %d\nwith \"quotes\" and unicode \u00e9\u4e16", "ok": %t, "next": null}
  }`, i, i%17, (i+1)%17, float64(i)*1.25e-2, i, i%3 == 0)
	}
	sb.WriteString("\n]\n")
	return []byte(sb.String())
}()

func BenchmarkValid(b *testing.B) {
	payloads := []struct {
		name string
		data [][]byte // checked in turn
	}{
		{"task", [][]byte{benchTask}},
		{"1KiB", [][]byte{benchKiB}},
		{"64KiB", [][]byte{bench64K}},
		{"tasks", benchTasks},
	}
	validators := []struct {
		name  string
		valid func([]byte) bool
	}{
		{"codec", Valid},
		{"jsontext", validJSONText},
		{"encoding-json", json.Valid},
	}
	for _, p := range payloads {
		size := 0
		for _, d := range p.data {
			if !json.Valid(d) || !Valid(d) {
				b.Fatalf("%s: benchmark payload %s is not valid JSON", p.name, d)
			}
			size += len(d)
		}
		b.Run(p.name, func(b *testing.B) {
			for _, v := range validators {
				b.Run(v.name, func(b *testing.B) {
					b.ReportAllocs()
					b.SetBytes(int64(size / len(p.data)))
					n := 0
					for b.Loop() {
						v.valid(p.data[n%len(p.data)])
						n++
					}
				})
			}
		})
	}
}

// benchTasks are 256 task payloads of 100 to 150 bytes, each with its own
// keys, values and lengths. A validator checking one payload over and over
// runs with its branches all predicted; "tasks" checks them in turn, as a
// bus does its senders' messages, where the branches of the code between
// two checks also claim the predictor: BenchmarkValid/task measured 78 ns,
// the same check inside BenchmarkSend/bus-new 113 ns (its CPU profile).
var benchTasks = func() [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	word := func(min, max int) string {
		const letters = "abcdefghijklmnopqrstuvwxyz-_/.0123456789"
		b := make([]byte, min+r.IntN(max-min+1))
		for i := range b {
			b[i] = letters[r.IntN(len(letters))]
		}
		return string(b)
	}
	tasks := make([][]byte, 256)
	for i := range tasks {
		for {
			t := fmt.Sprintf(`{"%s":"%s","%s":"%s","%s":{"%s":%d,"%s":%d},"%s":["%s","%s"]}`,
				word(3, 8), word(4, 14), word(2, 6), word(8, 30), word(4, 8), word(5, 9), r.IntN(100000),
				word(4, 9), r.IntN(1000), word(3, 6), word(4, 10), word(3, 10))
			if len(t) >= 100 && len(t) <= 150 {
				tasks[i] = []byte(t)
				break
			}
		}
	}
	return tasks
}()

func TestBenchPayloadSizes(t *testing.T) {
	t.Logf("task=%d 1KiB=%d 64KiB=%d", len(benchTask), len(benchKiB), len(bench64K))
	if len(benchKiB) < 900 || len(benchKiB) > 1200 || len(bench64K) < 60<<10 || len(bench64K) > 66<<10 {
		t.Fatalf("unexpected payload sizes: 1KiB=%d 64KiB=%d", len(benchKiB), len(bench64K))
	}
}
