package stripesim

// IdemPrunedSinceRebuild is how many idempotency keys were dropped since the
// key map was last rebuilt.
func IdemPrunedSinceRebuild(s *Sim) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idemGone
}
