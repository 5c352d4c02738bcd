package codec

import "testing"

// TestNotTaken: exactly the refusals that say nothing was done may be
// sent again; an error that may follow a write applied (OUTCOME_UNKNOWN)
// or a refusal for good must not be.
func TestNotTaken(t *testing.T) {
	notTaken := map[Status]bool{
		Status_STATUS_NOT_HEAD: true, Status_STATUS_NOT_TAIL: true, Status_STATUS_UNAVAILABLE: true,
		Status_STATUS_STALE_CONFIG: true, Status_STATUS_DISK_FAILED: true,
	}
	for v := range Status_name {
		s := Status(v)
		if got := NotTaken(s); got != notTaken[s] {
			t.Errorf("NotTaken(%v) = %v, want %v", s, got, notTaken[s])
		}
	}
}
