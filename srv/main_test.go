package srv

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// connection closed and every server stopped must leave nothing running.
// gnet keeps one process-wide worker pool, started with the package; its
// two housekeeping goroutines are not ours to stop, nor are its idle
// workers (Server.Attach enrols through it), which wait for a task until
// they expire; a worker stuck in a task has the task on top instead.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1"),
	)
}
