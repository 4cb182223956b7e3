package main

import (
	"fmt"
	"sync"
	"time"
)

// waitQuiet is how long a wait goes unremarked.
const waitQuiet = time.Second

// waiting shows, on a terminal, that the command is waiting for what: after
// a second, a line on stderr, "agentbus: waiting for <what>… 3s (^C to give
// up)", counted up every second and erased when the wait ends. It shows
// nothing when stderr is not a terminal, where the line would only clutter
// a log. Call the stop it returns when the wait is over: it erases the line
// and waits for the goroutine that draws it.
func (g *globals) waiting(what string) (stop func()) {
	if !g.tty {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		t := time.NewTimer(waitQuiet)
		defer t.Stop()
		shown := false
		for {
			select {
			case <-done:
				if shown {
					fmt.Fprint(g.stderr, "\r\x1b[K")
				}
				return
			case <-t.C:
			}
			elapsed := time.Since(start).Truncate(time.Second)
			fmt.Fprintf(g.stderr, "\r\x1b[Kagentbus: waiting for %s… %v (^C to give up)", what, elapsed)
			shown = true
			t.Reset(time.Second - time.Since(start)%time.Second)
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}
