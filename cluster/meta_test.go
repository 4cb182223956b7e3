package cluster

import (
	"log/slog"
	"testing"

	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/descartes/agentbus/cluster/wire"
)

// TestPeerRefused: a peer whose metadata says another wire version, another
// cluster, another name, or nothing readable is refused, at join
// (NotifyMerge: Start's error) and when it is gossiped (NotifyAlive), with
// an error that says why.
func TestPeerRefused(t *testing.T) {
	meta := func(f *wire.Frame) []byte {
		b, err := proto.Marshal(f)
		require.NoError(t, err)
		return b
	}
	good := &wire.Frame{Version: wire.Version, Kind: wire.Kind_META, From: "peer/1", Cluster: "c", NodeName: "peer"}
	tests := []struct {
		name string
		meta []byte
		want string
	}{
		{"compatible", meta(good), ""},
		{"other version", meta(&wire.Frame{Version: 2, Kind: wire.Kind_META, From: "peer/1", Cluster: "c"}),
			"frame version 2, this node speaks 1"},
		{"other cluster", meta(&wire.Frame{Version: wire.Version, Kind: wire.Kind_META, From: "peer/1", Cluster: "d"}),
			`belongs to cluster "d", not "c"`},
		{"other name", meta(&wire.Frame{Version: wire.Version, Kind: wire.Kind_META, From: "liar/1", Cluster: "c"}),
			`metadata names "liar/1"`},
		{"not a frame", []byte{0xff, 0xff}, "malformed"},
		{"no metadata", nil, "frame version 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &Node{cfg: Config{Name: "c"}, self: "me/1", log: slog.New(slog.DiscardHandler)}
			d := delegate{n}
			peer := &memberlist.Node{Name: "peer/1", Meta: tt.meta}
			errAlive := d.NotifyAlive(peer)
			errMerge := d.NotifyMerge([]*memberlist.Node{peer})
			if tt.want == "" {
				require.NoError(t, errAlive)
				require.NoError(t, errMerge)
				return
			}
			for _, err := range []error{errAlive, errMerge} {
				require.ErrorIs(t, err, ErrIncompatible)
				assert.Contains(t, err.Error(), tt.want)
			}
			assert.EqualValues(t, 2, n.stats.refused.Load())
			require.Error(t, n.refusal, "Start reports it")
		})
	}
}
