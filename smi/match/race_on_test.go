//go:build race

package match

// The race detector makes sync.Pool drop items, so regexp allocates its
// matcher state; allocation counts are only checked without -race.
const raceEnabled = true
