// Command benchratio reads `go test -bench` output on stdin and prints, for
// each benchmark that has "bus" and "protoactor" (or "jetstream")
// sub-benchmarks (or "X" and "X-floor"), the median of every metric over the runs and the ratio
// bus/protoactor (or X/X-floor). Latencies reported in nanoseconds (p50-ns,
// p99-ns) are shown in microseconds, beside those reported so. Ratios from one run
// are what carry on a noisy machine; run with -count 5 or more.
//
//	go test -run '^$' -bench . -count 6 . | go run ./internal/benchratio
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// line matches "BenchmarkSend/bus-2   1000   123 ns/op   4.5 msgs/s ...".
var line = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

func main() {
	if err := report(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchratio:", err)
		os.Exit(1)
	}
}

// samples maps benchmark name → metric unit → values.
type samples map[string]map[string][]float64

func parse(r io.Reader) (samples, []string, error) {
	s := samples{}
	var order []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		name, fields := m[1], strings.Fields(m[2])
		if s[name] == nil {
			s[name] = map[string][]float64{}
			order = append(order, name)
		}
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			unit := fields[i+1]
			if q, ok := strings.CutSuffix(unit, "-ns"); ok { // p50-ns: shown as p50-µs
				unit, v = q+"-µs", v/1e3
			}
			s[name][unit] = append(s[name][unit], v)
		}
	}
	return s, order, sc.Err()
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func report(r io.Reader, w io.Writer) error {
	s, order, err := parse(r)
	if err != nil {
		return err
	}
	units := []string{"msgs/s", "ns/op", "p50-µs", "p99-µs", "B/msg", "queue-B/msg", "B/op", "allocs/op"}
	fmt.Fprintln(w, "| benchmark | runs | "+strings.Join(units, " | ")+" |")
	fmt.Fprintln(w, "|---|---:|"+strings.Repeat("---:|", len(units)))
	for _, name := range order {
		cells := []string{strings.TrimPrefix(name, "Benchmark"), strconv.Itoa(len(s[name]["ns/op"]))}
		for _, u := range units {
			if v, ok := s[name][u]; ok {
				cells = append(cells, format(median(v)))
			} else {
				cells = append(cells, "")
			}
		}
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| ratio (medians): bus / protoactor (or jetstream), or X / X-floor | msgs/s | ns/op | p50 | p99 | B/msg |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for _, name := range order {
		label, baseline := "", ""
		switch {
		case strings.HasSuffix(name, "/bus"):
			label = strings.TrimSuffix(name, "/bus")
			baseline = label + "/protoactor"
			if _, ok := s[baseline]; !ok { // the durable benchmarks' peer
				baseline = label + "/jetstream"
			}
		default:
			label, baseline = name, name+"-floor"
		}
		p, ok := s[baseline]
		if !ok {
			continue
		}
		cells := []string{strings.TrimPrefix(label, "Benchmark")}
		for _, u := range []string{"msgs/s", "ns/op", "p50-µs", "p99-µs", "B/msg"} {
			b, q := median(s[name][u]), median(p[u])
			if b == 0 || q == 0 {
				cells = append(cells, "")
				continue
			}
			cells = append(cells, fmt.Sprintf("%.2f×", b/q))
		}
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
	return nil
}

func format(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
