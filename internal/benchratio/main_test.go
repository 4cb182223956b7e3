package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReport(t *testing.T) {
	in := `goos: linux
BenchmarkSend/bus-2         	 100	 200 ns/op	 5000000 msgs/s	 1 B/op	 0 allocs/op
BenchmarkSend/bus-2         	 100	 300 ns/op	 3000000 msgs/s	 1 B/op	 0 allocs/op
BenchmarkSend/bus-2         	 100	 250 ns/op	 4000000 msgs/s	 1 B/op	 0 allocs/op
BenchmarkSend/protoactor-2  	 100	 100 ns/op	 10000000 msgs/s	 0 B/op	 0 allocs/op
BenchmarkSend/protoactor-2  	 100	 125 ns/op	 8000000 msgs/s	 0 B/op	 0 allocs/op
BenchmarkOther-2            	 100	 7 ns/op
BenchmarkReq/bus-2          	 10	 1000 ns/op	 1500 p50-ns	 3000 p99-ns
BenchmarkReq/protoactor-2   	 10	 800 ns/op	 1000 p50-ns	 2.5 p99-µs
BenchmarkSocket/stream-2    	 10	 1000 ns/op	 600 msgs/s
BenchmarkSocket/stream-floor-2	 10	 500 ns/op	 1000 msgs/s
PASS
`
	var out bytes.Buffer
	require.NoError(t, report(strings.NewReader(in), &out))
	got := out.String()
	assert.Contains(t, got, "| Send/bus | 3 | 4.00M | 250 |")
	assert.Contains(t, got, "| Send/protoactor | 2 | 9.00M | 112 |")
	assert.Contains(t, got, "| Send | 0.44× | 2.22× |")
	assert.Contains(t, got, "| Other | 1 |")
	assert.Contains(t, got, "| Req/bus | 1 |  | 1000 | 1.50 | 3.00 |")
	assert.Contains(t, got, "| Req |  | 1.25× | 1.50× | 1.20× |")
	assert.Contains(t, got, "| Socket/stream | 0.60× | 2.00× |")
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		assert.Equal(t, tt.want, median(tt.in))
	}
}
