package counter

import "time"

// gatherer builds the groups of a loop that writes what callers queue (the
// journal's committer, a Redis batcher): it takes what is queued, and,
// with a delay, holds a group smaller than the one before it open until
// as many have come or the delay has passed (Options.CommitDelay).
type gatherer[T any] struct {
	queue chan T
	max   int
	delay time.Duration // <= 0: no holding
	prev  int           // size of the last group
	timer *time.Timer   // reused across groups; an unreferenced timer needs no Stop (Go 1.23)
}

func (g *gatherer[T]) gather(first T) []T {
	group := []T{first}
fill:
	for len(group) < g.max {
		select {
		case r := <-g.queue:
			group = append(group, r)
		default:
			break fill
		}
	}
	// After a group of one, want is 1: a lone client is never held.
	if want := min(g.prev, g.max); g.delay > 0 && len(group) < want {
		if g.timer == nil {
			g.timer = time.NewTimer(g.delay)
		} else {
			g.timer.Reset(g.delay)
		}
	wait:
		for len(group) < want {
			select {
			case r := <-g.queue:
				group = append(group, r)
			case <-g.timer.C:
				break wait
			}
		}
		g.timer.Stop()
	}
	g.prev = len(group)
	return group
}
