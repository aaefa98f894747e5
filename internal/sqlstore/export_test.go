package sqlstore

// ReadStmtsKept returns how many point-read statements s keeps.
func ReadStmtsKept(s *Store) int64 { return s.nreads.Load() }

// MaxReadStmts is maxReadStmts, for tests.
const MaxReadStmts = maxReadStmts

// SetCapTrimStep sets how many rows a step of SetTimelineCap deletes at
// most, and a function run after each step that leaves more; it returns
// the function that restores both.
func SetCapTrimStep(n int64, after func()) (restore func()) {
	oldN, oldAfter := capTrimStep, afterCapTrimStep
	capTrimStep, afterCapTrimStep = n, after
	return func() { capTrimStep, afterCapTrimStep = oldN, oldAfter }
}

// SetAfterTakeReplayRead sets a function TakeReplay runs between its read
// and its update, and returns the function that removes it.
func SetAfterTakeReplayRead(f func()) (restore func()) {
	old := afterTakeReplayRead
	afterTakeReplayRead = f
	return func() { afterTakeReplayRead = old }
}
