package sqlstore

// ReadStmtsKept returns how many point-read statements s keeps.
func ReadStmtsKept(s *Store) int64 { return s.nreads.Load() }

// MaxReadStmts is maxReadStmts, for tests.
const MaxReadStmts = maxReadStmts
