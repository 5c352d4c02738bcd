package srv

// prefetch asks the CPU to bring the cache line at addr into its caches.
// It is a hint: it never faults, whatever addr is, nor waits for the line,
// and neither fences nor locked instructions wait for it.
//
//go:noescape
func prefetch(addr uintptr)
