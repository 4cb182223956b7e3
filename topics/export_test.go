package topics

// NodeCount returns the number of nodes in t, the root included, so that
// tests can check that Remove prunes.
func NodeCount[T comparable](t *Tree[T]) int { return t.root.count() }

func (n *node[T]) count() int {
	c := 1
	for _, ch := range n.lits {
		c += ch.count()
	}
	if n.one != nil {
		c += n.one.count()
	}
	if n.rest != nil {
		c += n.rest.count()
	}
	return c
}
