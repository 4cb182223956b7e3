package agentbus

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRecent(t *testing.T) {
	r := newRecent[int](3)
	for i := range 5 {
		r.add(fmt.Sprint(i), i)
	}
	assert.False(t, r.contains("0"), "the oldest are forgotten")
	assert.False(t, r.contains("1"))
	v, ok := r.take("3")
	assert.True(t, ok)
	assert.Equal(t, 3, v)
	_, ok = r.take("3")
	assert.False(t, ok, "taken once")

	// An ID taken and remembered again is not forgotten early because of
	// its first entry.
	r.add("3", 30)
	r.add("5", 5)
	r.add("6", 6)
	v, ok = r.take("3")
	assert.True(t, ok)
	assert.Equal(t, 30, v)
	assert.True(t, r.contains("5"))
	assert.True(t, r.contains("6"))
	assert.False(t, r.contains("4"), "the oldest went when 6 came")
}
