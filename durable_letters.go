package agentbus

import (
	"encoding/json"
	"time"

	"github.com/descartes/agentbus/deadletter"
)

// storedLetter is the form of a dead letter in the durable store.
type storedLetter struct {
	Message    *Message  `json:"message"`
	Reason     string    `json:"reason"`
	Err        string    `json:"error,omitempty"`
	Agent      string    `json:"agent,omitempty"`
	Time       time.Time `json:"time"`
	Attempts   int       `json:"attempts,omitempty"`
	Replays    int       `json:"replays,omitempty"`
	ReplayedTo string    `json:"replayed_to,omitempty"`
	ReplayedAt time.Time `json:"replayed_at,omitzero"`
}

func encodeLetter(l *deadletter.Letter) ([]byte, error) {
	return json.Marshal(storedLetter{Message: l.Message, Reason: string(l.Reason), Err: l.Err, Agent: l.Agent,
		Time: l.Time, Attempts: l.Attempts, Replays: l.Replays, ReplayedTo: l.ReplayedTo, ReplayedAt: l.ReplayedAt})
}

func decodeLetter(b []byte) (deadletter.Letter, error) {
	var s storedLetter
	if err := json.Unmarshal(b, &s); err != nil {
		return deadletter.Letter{}, err
	}
	return deadletter.Letter{Message: s.Message, Reason: deadletter.Reason(s.Reason), Err: s.Err, Agent: s.Agent,
		Time: s.Time, Attempts: s.Attempts, Replays: s.Replays, ReplayedTo: s.ReplayedTo, ReplayedAt: s.ReplayedAt}, nil
}
