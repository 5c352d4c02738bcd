package chain_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/internal/cluster"
	"github.com/chaintable/chaintable/internal/course"
	"github.com/chaintable/chaintable/zkwatch"
)

// Course clients against real chains: clients that know only the course
// protocol (internal/course, in Go, and its C twin against Debian's
// libzookeeper-mt and protobuf-c) order /chain by whole names, write at
// the first member, read at the last (or at any member), take any
// OP_ERROR to a get for "not found", and never send a write twice. They
// must get correct answers through failures and joins: a linearizable
// history, no acknowledged write lost, and no false "not found".

// Timing and bounds of the course tests.
const (
	// courseTimeout bounds each request of a course client; a frozen
	// node costs a client at most that.
	courseTimeout = 5 * time.Second
	// courseAnswer bounds how long the C client may take to answer a
	// command line, beyond its own request timeout.
	courseAnswer = 3 * courseTimeout
	// courseMaxOps bounds each load client's loop.
	courseMaxOps = 50_000
	// courseMaxPause bounds the pause between a client's operations, so
	// that histories stay quick to check.
	courseMaxPause = 5 * time.Millisecond
	// courseErrorPause is a client's pause after an operation without a
	// definite answer.
	courseErrorPause = 100 * time.Millisecond
	// coursePhaseCheck bounds porcupine's check of one phase. A legal
	// phase takes milliseconds, the 100,000 operations of the join's
	// preloaded keys a few seconds under the race detector; an illegal
	// one may take much longer to prove so, and a check that does not
	// finish fails the test too.
	coursePhaseCheck = 30 * time.Second
	// courseSettle is how long the load goes on after each recovery.
	courseSettle = time.Second
)

// plainName is a member name as course servers create it, and as course
// clients need it: ordering by name must order by sequence.
var plainName = regexp.MustCompile(`^node[0-9]{10}$`)

// A courseClient executes one command of the C client's line language
// (put KEY VALUE, get KEY, del KEY, size, members) and returns its one
// line of answer; see internal/course/c/course_client.c.
type courseClient interface {
	exec(cmd string) string
	close()
}

// goCourse is the Go course client behind the line language.
type goCourse struct{ c *course.Client }

func dialGoCourse(t *testing.T, zkAddr string, from course.ReadFrom) *goCourse {
	t.Helper()
	c, err := course.Dial(zkAddr, course.Options{ReadFrom: from, Timeout: courseTimeout})
	if err != nil {
		t.Fatalf("course client: %v", err)
	}
	return &goCourse{c: c}
}

func (g *goCourse) close() { g.c.Close() }

func (g *goCourse) exec(cmd string) string {
	verb, rest, _ := strings.Cut(cmd, " ")
	switch verb {
	case "put":
		key, value, _ := strings.Cut(rest, " ")
		return courseAnswerOf(g.c.Put(key, []byte(value)), "ok")
	case "del":
		return courseAnswerOf(g.c.Del(rest), "ok")
	case "get":
		v, found, err := g.c.Get(rest)
		switch {
		case err != nil:
			return courseAnswerOf(err, "")
		case !found:
			return "not found"
		}
		return "value " + string(v)
	case "size":
		n, err := g.c.Size()
		return courseAnswerOf(err, fmt.Sprintf("size %d", n))
	case "members":
		ms, err := g.c.Members()
		if err != nil {
			return courseAnswerOf(err, "")
		}
		var b strings.Builder
		b.WriteString("members")
		for _, m := range ms {
			fmt.Fprintf(&b, " %s=%s", m.Name, m.Addr)
		}
		return b.String()
	}
	return "error usage"
}

// courseAnswerOf renders err as the C client does, or ok without one.
func courseAnswerOf(err error, ok string) string {
	switch {
	case err == nil:
		return ok
	case errors.Is(err, course.ErrNotSent):
		return "error unsent"
	case errors.Is(err, course.ErrRefused):
		return "error refused"
	}
	return "error io"
}

// cCourse is a C course client process, driven through its standard input
// and output.
type cCourse struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	dead  atomic.Bool // it failed to answer in time and was killed
}

// startCCourse starts the C client bin on the ZooKeeper at zkAddr, with
// its ZooKeeper log in dir.
func startCCourse(t *testing.T, bin, zkAddr string, from course.ReadFrom, dir string) *cCourse {
	t.Helper()
	logf, err := os.CreateTemp(dir, "course_client-*.log")
	if err != nil {
		t.Fatalf("C course client log: %v", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, zkAddr, from.String())
	cmd.Stderr = logf
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("C course client: %v", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("C course client: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("C course client: %v", err)
	}
	c := &cCourse{t: t, cmd: cmd, in: in, lines: make(chan string, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(c.close)
	return c
}

func (c *cCourse) exec(cmd string) string {
	if c.dead.Load() {
		return "error io: the client was killed"
	}
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		return "error io: " + err.Error()
	}
	select {
	case line, ok := <-c.lines:
		if !ok {
			return "error io: the client exited"
		}
		return line
	case <-time.After(courseAnswer):
		c.dead.Store(true)
		c.cmd.Process.Kill()
		return fmt.Sprintf("error io: no answer within %v; killed pid %d", courseAnswer, c.cmd.Process.Pid)
	}
}

// close ends the client's input and waits for it to exit, which it must
// do cleanly; it is killed, by its PID, if it does not.
func (c *cCourse) close() {
	if c.cmd.ProcessState != nil {
		return
	}
	c.in.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil && !c.dead.Load() {
			c.t.Errorf("C course client pid %d: %v", c.cmd.Process.Pid, err)
		}
	case <-time.After(courseAnswer):
		c.cmd.Process.Kill()
		<-done
		c.t.Errorf("C course client pid %d did not exit at the end of its input; killed it", c.cmd.Process.Pid)
	}
}

// TestCourseClients runs the same script through the Go and the C course
// client against a chain of three: they resolve head and tail by name as
// ZooKeeper's sequence orders the chain, and put, get, del and size give
// the course's answers, reads at every member too, large values (extended
// frames) included.
func TestCourseClients(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Nodes: 3})
	c.WaitTailServes(faultRecover)
	bin := course.BuildC(t)
	v := c.View()
	var want []string
	for _, m := range v.Members {
		if !plainName.MatchString(m.Name) {
			t.Errorf("member %s@%s: want a plain sequential name like node0000000007, which course clients order by", m.Name, m.Addr)
		}
		want = append(want, m.Name+"="+m.Addr)
	}
	members := "members " + strings.Join(want, " ")
	big := strings.Repeat("v", 70_000) // past 0xFFFF: an extended frame each way

	clients := []struct {
		name string
		dial func(course.ReadFrom) courseClient
	}{
		{"go", func(from course.ReadFrom) courseClient { return dialGoCourse(t, c.ZKAddr(), from) }},
		{"c", func(from course.ReadFrom) courseClient { return startCCourse(t, bin, c.ZKAddr(), from, c.Dir()) }},
	}
	for _, cl := range clients {
		for _, from := range []course.ReadFrom{course.Tail, course.Any} {
			t.Run(cl.name+"/"+from.String(), func(t *testing.T) {
				k := fmt.Sprintf("%s-%s-", cl.name, from)
				script := []struct{ cmd, want string }{
					{"members", members},
					{"get " + k + "a", "not found"},
					{"del " + k + "a", "error refused"},
					{"put " + k + "a one", "ok"},
					{"get " + k + "a", "value one"},
					{"put " + k + "a two words", "ok"},
					{"get " + k + "a", "value two words"},
					{"put " + k + "b " + big, "ok"},
					{"get " + k + "b", "value " + big},
					{"del " + k + "a", "ok"},
					{"get " + k + "a", "not found"},
					{"del " + k + "b", "ok"},
					{"size", "size 0"},
					{"put " + k + "c x", "ok"},
					{"size", "size 1"},
				}
				client := cl.dial(from)
				defer client.close()
				for _, step := range script {
					if got := client.exec(step.cmd); got != step.want {
						t.Errorf("%.60s: got %.60q, want %.60q", step.cmd, got, step.want)
					}
				}
				// Random members: every read right, wherever it lands.
				for i := range 30 {
					if got := client.exec("get " + k + "c"); got != "value x" {
						t.Fatalf("read %d of %sc: got %q, want %q", i, k, got, "value x")
					}
				}
				if got := client.exec("del " + k + "c"); got != "ok" {
					t.Errorf("del %sc: got %q, want ok", k, got)
				}
			})
		}
	}
}

// courseLoad is a bounded mixed load of course clients, recorded in a
// History. Every put writes a value never written before.
type courseLoad struct {
	t       *testing.T
	h       *cluster.History
	clients []courseClient
	seed    uint64
	hot     atomic.Pointer[[]string] // keys of every operation, dels included
	cold    []string                 // keys of gets and puts only; none if empty

	stop    chan struct{}
	wg      sync.WaitGroup
	refused atomic.Int64 // puts answered OP_ERROR, which must not happen
	unsent  atomic.Int64 // operations that failed before they were sent

	usedMu sync.Mutex
	used   []string
}

// startCourseLoad starts clients on hot keys (prefix+"k0".."k4") and,
// half the time, on cold ones.
func startCourseLoad(t *testing.T, clients []courseClient, seed uint64, cold []string, h *cluster.History) *courseLoad {
	l := &courseLoad{t: t, h: h, clients: clients, seed: seed, cold: cold, stop: make(chan struct{})}
	l.rekey("p0-")
	t.Logf("course load: %d clients, seed %d", len(clients), seed)
	for i, c := range clients {
		l.wg.Add(1)
		go l.run(i, c)
	}
	t.Cleanup(l.halt)
	return l
}

// rekey moves the clients to fresh hot keys, prefix+"k0".., and returns
// them.
func (l *courseLoad) rekey(prefix string) []string {
	keys := make([]string, 5)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sk%d", prefix, i)
	}
	l.usedMu.Lock()
	l.used = append(l.used, keys...)
	l.usedMu.Unlock()
	l.hot.Store(&keys)
	return keys
}

// halt stops the clients and waits for them; each finishes the operation
// it is in, which its timeouts bound.
func (l *courseLoad) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *courseLoad) run(id int, c courseClient) {
	defer l.wg.Done()
	rng := rand.New(rand.NewPCG(l.seed, uint64(id)))
	for i := range courseMaxOps {
		select {
		case <-l.stop:
			return
		default:
		}
		var in cluster.Input
		if len(l.cold) > 0 && rng.IntN(2) == 0 {
			in = cluster.Input{Kind: cluster.Get, Key: l.cold[rng.IntN(len(l.cold))]}
			if rng.IntN(5) == 0 {
				in.Kind, in.Value = cluster.Put, fmt.Sprintf("c%d-%d", id, i)
			}
		} else {
			keys := *l.hot.Load()
			in.Key = keys[rng.IntN(len(keys))]
			switch p := rng.IntN(20); {
			case p < 10:
				in.Kind = cluster.Get
			case p < 17:
				in.Kind, in.Value = cluster.Put, fmt.Sprintf("c%d-%d", id, i)
			default:
				in.Kind = cluster.Del
			}
		}
		pause := rand.N(courseMaxPause)
		if !l.do(id, c, in, false) {
			// As a user would, wait a moment after an error: a chain
			// that fails over is not hammered, and the writes whose
			// outcome is unknown, which porcupine may place anywhere,
			// stay few.
			pause = courseErrorPause
		}
		time.Sleep(pause)
	}
}

// do runs in with c and records it as client id's, unless it was never
// sent. It reports whether it got a definite answer.
func (l *courseLoad) do(id int, c courseClient, in cluster.Input, probe bool) bool {
	call := l.h.Now()
	out, err, sent := courseDo(c, in)
	if !sent {
		l.unsent.Add(1)
		return false
	}
	if in.Kind == cluster.Put && err != nil && strings.HasPrefix(err.Error(), "error refused") {
		l.refused.Add(1)
	}
	l.h.Add(cluster.Op{Client: id, Input: in, Output: out, Call: call, Return: l.h.Now(), Err: err, Probe: probe})
	return out.Outcome == cluster.OK
}

// courseDo runs in with c and says what a course client learns from it:
// a get's OP_ERROR is "not found", and so is a del's (the table's answer
// to a del of a missing key: a del refused for another reason shows in
// the linearizability check); a put's OP_ERROR is a failure whose outcome
// the client cannot know, like a broken connection. sent is false if the
// request was never sent, so it took no effect.
func courseDo(c courseClient, in cluster.Input) (out cluster.Output, err error, sent bool) {
	var cmd string
	switch in.Kind {
	case cluster.Put:
		cmd = "put " + in.Key + " " + in.Value
	case cluster.Get:
		cmd = "get " + in.Key
	case cluster.Del:
		cmd = "del " + in.Key
	}
	line := c.exec(cmd)
	value, isValue := strings.CutPrefix(line, "value ")
	switch {
	case line == "error unsent":
		return cluster.Output{}, nil, false
	case line == "ok" && in.Kind != cluster.Get:
		return cluster.Output{}, nil, true
	case isValue && in.Kind == cluster.Get:
		return cluster.Output{Value: value}, nil, true
	case line == "not found" && in.Kind == cluster.Get,
		line == "error refused" && in.Kind == cluster.Del:
		return cluster.Output{NotFound: true}, nil, true
	}
	return cluster.Output{Outcome: cluster.Indefinite}, errors.New(line), true
}

// readFinal reads the whole table at the tail (gettable, a large
// frame) through a new course client, trying again if it fails (a read
// may be sent again), and records it in the History, after everything
// else, as a get of each of keys and of each key in the table, all
// answered within the gettable's call and return.
func (l *courseLoad) readFinal(zkAddr string, keys []string) map[string]string {
	l.t.Helper()
	c, err := course.Dial(zkAddr, course.Options{Timeout: courseTimeout})
	if err != nil {
		l.t.Fatalf("course client: %v", err)
	}
	defer c.Close()
	var entries []*codec.EntryT
	var call, ret int64
	for try := 0; ; try++ {
		call = l.h.Now()
		if entries, err = c.Table(); err == nil {
			ret = l.h.Now()
			break
		}
		if try == 50 {
			l.t.Fatalf("final gettable failed %d times, last: %v", try+1, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	final := make(map[string]string)
	for _, e := range entries {
		final[e.Key] = string(e.Value)
	}
	read := make(map[string]bool)
	for _, key := range append(slices.Collect(maps.Keys(final)), keys...) {
		if read[key] {
			continue
		}
		read[key] = true
		out := cluster.Output{NotFound: true}
		if v, ok := final[key]; ok {
			out = cluster.Output{Value: v}
		}
		l.h.Add(cluster.Op{Client: len(l.clients), Input: cluster.Input{Kind: cluster.Get, Key: key}, Output: out, Call: call, Return: ret, Probe: true})
	}
	return final
}

// falseNotFound returns the gets answered "not found" although an
// acknowledged put of their key returned before they were called, and no
// del of the key could have taken effect between that put's call and the
// get's answer: reads that a course client took for a missing key while
// the key held a value.
func falseNotFound(ops []cluster.Op) []cluster.Op {
	byKey := make(map[string][]cluster.Op)
	for _, op := range ops {
		byKey[op.Input.Key] = append(byKey[op.Input.Key], op)
	}
	var bad []cluster.Op
	for _, kops := range byKey {
		for _, g := range kops {
			if g.Input.Kind != cluster.Get || g.Output.Outcome != cluster.OK || !g.Output.NotFound {
				continue
			}
			// The latest-called acknowledged put that returned before g
			// was called: the fewest dels can follow it.
			var put *cluster.Op
			for i, p := range kops {
				if p.Input.Kind == cluster.Put && p.Output.Outcome == cluster.OK && p.Return < g.Call && (put == nil || p.Call > put.Call) {
					put = &kops[i]
				}
			}
			if put == nil {
				continue
			}
			removable := slices.ContainsFunc(kops, func(d cluster.Op) bool {
				return d.Input.Kind == cluster.Del && d.Call < g.Return && (d.Output.Outcome != cluster.OK || d.Return > put.Call)
			})
			if !removable {
				bad = append(bad, g)
			}
		}
	}
	slices.SortFunc(bad, func(a, b cluster.Op) int { return int(a.Call - b.Call) })
	return bad
}

// coursePhase is one fault of a run, with keys of its own.
type coursePhase struct {
	name       string
	prefix     string
	start, end int64
}

// courseVerdict sums up the operations on some keys: those of the load's
// clients are counted, and every one is checked.
type courseVerdict struct {
	ops, definite, notFound, falseNotFound, lost int
	linearizable                                 porcupine.CheckResult
}

func (v courseVerdict) String() string {
	return fmt.Sprintf("%d operations (%d definite, %d gets not found), %d false not found, %d acknowledged writes lost, linearizable: %v",
		v.ops, v.definite, v.notFound, v.falseNotFound, v.lost, map[porcupine.CheckResult]string{porcupine.Ok: "yes", porcupine.Illegal: "NO", porcupine.Unknown: "unknown (timed out)"}[v.linearizable])
}

// judge counts what courseVerdict counts in ops, the operations of a
// phase, and checks them with porcupine, failing the test with
// porcupine's visualization in dir if they are not linearizable; lost are
// the keys whose acknowledged writes were lost.
func judge(t *testing.T, name string, ops []cluster.Op, lost []cluster.Lost, dir string) courseVerdict {
	t.Helper()
	v := courseVerdict{falseNotFound: len(falseNotFound(ops))}
	keys := make(map[string]bool)
	for _, op := range ops {
		keys[op.Input.Key] = true
		if op.Probe {
			continue // a preload or a final read: not the load's
		}
		v.ops++
		if op.Output.Outcome == cluster.OK {
			v.definite++
			if op.Input.Kind == cluster.Get && op.Output.NotFound {
				v.notFound++
			}
		}
	}
	for _, l := range lost {
		if keys[l.Key] {
			v.lost++
		}
	}
	res, info := porcupine.CheckOperationsVerbose(cluster.Model, cluster.Operations(ops), coursePhaseCheck)
	v.linearizable = res
	switch res {
	case porcupine.Illegal:
		path := filepath.Join(dir, fmt.Sprintf("%s-%s-linearizability.html", strings.ReplaceAll(t.Name(), "/", "_"), name))
		if err := porcupine.VisualizePath(cluster.Model, info, path); err != nil {
			t.Errorf("phase %s: not linearizable; writing the visualization failed: %v", name, err)
		} else {
			t.Errorf("phase %s: not linearizable; visualization: %s", name, path)
		}
	case porcupine.Unknown:
		t.Errorf("phase %s: porcupine's check of %d operations did not finish within %v", name, len(ops), coursePhaseCheck)
	}
	return v
}

// checkCourseRun stops the load, reads the table at the end, and checks
// the run: no put answered OP_ERROR, no false "not found", no
// acknowledged write lost, a linearizable history. It logs a verdict per
// phase and returns the whole run's. Every key must belong to one phase:
// its prefix.
func checkCourseRun(t *testing.T, c *cluster.Cluster, l *courseLoad, phases []coursePhase, extraKeys []string) courseVerdict {
	t.Helper()
	l.halt()
	c.WaitTailServes(faultRecover)
	l.usedMu.Lock()
	keys := append(slices.Clone(l.used), extraKeys...)
	l.usedMu.Unlock()
	checking := time.Now()
	final := l.readFinal(c.ZKAddr(), keys)
	t.Logf("final gettable: %d entries, in %v", len(final), time.Since(checking).Round(time.Millisecond))
	ops := l.h.Ops()
	lost := cluster.LostWrites(l.h, final)
	byPhase := make([][]cluster.Op, len(phases))
	for _, op := range ops {
		i := slices.IndexFunc(phases, func(p coursePhase) bool { return strings.HasPrefix(op.Input.Key, p.prefix) })
		if i < 0 {
			t.Fatalf("key %q is in no phase", op.Input.Key)
		}
		byPhase[i] = append(byPhase[i], op)
	}
	// The phases' keys are disjoint, so the history is linearizable if
	// and only if each phase's is: one check each.
	total := courseVerdict{linearizable: porcupine.Ok}
	for i, p := range phases {
		v := judge(t, fmt.Sprintf("%02d", i), byPhase[i], lost, c.Dir())
		t.Logf("phase %s (%v): %v", p.name, time.Duration(p.end-p.start).Round(time.Millisecond), v)
		total.ops += v.ops
		total.definite += v.definite
		total.notFound += v.notFound
		total.falseNotFound += v.falseNotFound
		total.lost += v.lost
		if v.linearizable != porcupine.Ok {
			total.linearizable = v.linearizable
		}
	}
	t.Logf("whole run: %v; %d puts refused, %d operations not sent; checked in %v", total, l.refused.Load(), l.unsent.Load(), time.Since(checking).Round(time.Millisecond))
	perClient := make(map[int]int)
	for _, op := range ops {
		if op.Output.Outcome == cluster.OK {
			perClient[op.Client]++
		}
	}
	for id := range l.clients {
		if perClient[id] == 0 {
			t.Errorf("client %d got no definite answer in the whole run", id)
		}
	}
	if n := l.refused.Load(); n > 0 {
		t.Errorf("%d puts were answered OP_ERROR, which a course client takes for a failure; want none", n)
	}
	bad := falseNotFound(ops)
	for i, op := range bad {
		if i == 10 {
			t.Errorf("and %d more false not found", len(bad)-10)
			break
		}
		t.Errorf("false not found: %s", l.h.Describe(op))
	}
	cluster.CheckFinal(t, l.h, final)
	return total
}

// courseClientsFor starts the load's clients: three Go course clients and
// a C one, all reading at from.
func courseClientsFor(t *testing.T, c *cluster.Cluster, from course.ReadFrom) []courseClient {
	bin := course.BuildC(t)
	var clients []courseClient
	for range 3 {
		clients = append(clients, dialGoCourse(t, c.ZKAddr(), from))
	}
	clients = append(clients, startCCourse(t, bin, c.ZKAddr(), from, c.Dir()))
	for _, cl := range clients {
		t.Cleanup(cl.close)
	}
	return clients
}

// courseFault is a fault injected into a chain of three, which returns
// once the chain is whole again.
type courseFault struct {
	name   string
	inject func(t *testing.T, c *cluster.Cluster)
}

// courseKill kills the node at pos and adds it back: it joins as the tail.
func courseKill(pos int) courseFault {
	return courseFault{"SIGKILL " + faultRole(pos) + ", add it back", func(t *testing.T, c *cluster.Cluster) {
		n := c.At(pos)
		n.Kill()
		c.WaitGone(n, faultRecover)
		c.WaitTailServes(faultRecover)
		n.Restart()
		nemesisWaitTail(t, c, n, -1)
	}}
}

// courseFreeze freezes the node at pos past its session timeout, with
// the clients' requests waiting in its socket, and resumes it.
func courseFreeze(pos int) courseFault {
	return courseOutAndBack("SIGSTOP "+faultRole(pos)+" past its session", pos, (*cluster.Node).Stop, (*cluster.Node).Cont)
}

// courseCutZK cuts the node at pos off from ZooKeeper, and only from it:
// clients that have not yet seen it go still send it requests. Healed,
// it joins again as the tail.
func courseCutZK(pos int) courseFault {
	return courseOutAndBack("cut "+faultRole(pos)+" off from ZooKeeper", pos, (*cluster.Node).CutZK, (*cluster.Node).HealZK)
}

// courseOutAndBack takes the node at pos out with out, until the others
// have dropped it and twice the session timeout has passed, then puts it
// back with back and waits until it serves as the new tail.
func courseOutAndBack(name string, pos int, out, back func(*cluster.Node)) courseFault {
	return courseFault{name, func(t *testing.T, c *cluster.Cluster) {
		n := c.At(pos)
		old, _ := n.Member()
		out(n)
		since := time.Now()
		c.WaitView(func(v zkwatch.View) bool { return v.Index(old.Name) < 0 }, faultRecover)
		c.WaitTailServes(faultRecover)
		time.Sleep(time.Until(since.Add(2 * c.SessionTimeout())))
		back(n)
		nemesisWaitTail(t, c, n, old.Seq)
	}}
}

// coursePartition cuts the links into the node at pos for twice the
// session timeout, and heals them.
func coursePartition(pos int, mode cluster.PartitionMode) courseFault {
	return courseFault{fmt.Sprintf("partition into %s (%s)", faultRole(pos), mode), func(t *testing.T, c *cluster.Cluster) {
		n := c.At(pos)
		n.Partition(mode)
		time.Sleep(2 * c.SessionTimeout())
		n.Heal()
		c.WaitView(func(v zkwatch.View) bool { return len(v.Members) == 3 }, faultRecover)
		c.WaitTailServes(faultRecover)
	}}
}

// TestCourseFaults runs course clients (three in Go, one in C) under a
// mixed load through the fault schedule, reading at the tail and, in a
// second run, at random members: kills of the head, the middle and the
// tail (each added back, so joining as the tail), SIGSTOP of the tail and
// of the head past their session, partitions into the middle and the
// tail, and the tail cut off from ZooKeeper.
func TestCourseFaults(t *testing.T) {
	for _, from := range []course.ReadFrom{course.Tail, course.Any} {
		t.Run("reads-at-"+from.String(), func(t *testing.T) {
			seed := faultSeedOf(t)
			c := cluster.Start(t, cluster.Options{Nodes: 3, NodeProxies: true})
			c.WaitTailServes(faultRecover)
			l := startCourseLoad(t, courseClientsFor(t, c, from), seed, nil, cluster.NewHistory())
			phases := []coursePhase{{name: "baseline", prefix: "p0-", start: l.h.Now()}}
			time.Sleep(2 * time.Second)
			for i, f := range []courseFault{
				courseKill(0),
				courseKill(1),
				courseKill(2),
				courseFreeze(2),
				courseFreeze(0),
				coursePartition(1, cluster.Silent),
				coursePartition(2, cluster.Reset),
				courseCutZK(2),
			} {
				phases[len(phases)-1].end = l.h.Now()
				prefix := fmt.Sprintf("p%d-", i+1)
				l.rekey(prefix)
				phases = append(phases, coursePhase{name: f.name, prefix: prefix, start: l.h.Now()})
				f.inject(t, c)
				time.Sleep(courseSettle)
			}
			phases[len(phases)-1].end = l.h.Now()
			checkCourseRun(t, c, l, phases, nil)
		})
	}
}

// TestCourseJoin adds a node to a one-node chain holding courseJoinKeys
// keys while course clients read them at the tail: the newcomer is the
// tail in ZooKeeper from its first moment, before it has the table, and
// must not answer "not found" for a key that exists.
func TestCourseJoin(t *testing.T) {
	const courseJoinKeys = 50_000
	seed := faultSeedOf(t)
	c := cluster.Start(t, cluster.Options{Nodes: 1})
	c.WaitTailServes(faultRecover)
	h := cluster.NewHistory()
	cold := make([]string, courseJoinKeys)
	for i := range cold {
		cold[i] = "j" + strconv.Itoa(i)
	}
	// Preload, in parallel, each put recorded as an acknowledged write.
	start := time.Now()
	const loaders = 8
	var wg sync.WaitGroup
	errs := make(chan error, loaders)
	for w := range loaders {
		wg.Go(func() {
			cl := dialGoCourse(t, c.ZKAddr(), course.Tail)
			defer cl.close()
			for i := w; i < len(cold); i += loaders {
				in := cluster.Input{Kind: cluster.Put, Key: cold[i], Value: "v" + cold[i]}
				call := h.Now()
				if line := cl.exec("put " + in.Key + " " + in.Value); line != "ok" {
					errs <- fmt.Errorf("preload put %s: %s", in.Key, line)
					return
				}
				h.Add(cluster.Op{Client: 1000 + w, Input: in, Call: call, Return: h.Now(), Probe: true})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("preloaded %d keys in %v", len(cold), time.Since(start).Round(time.Millisecond))

	clients := []courseClient{dialGoCourse(t, c.ZKAddr(), course.Tail), dialGoCourse(t, c.ZKAddr(), course.Tail),
		dialGoCourse(t, c.ZKAddr(), course.Any), startCCourse(t, course.BuildC(t), c.ZKAddr(), course.Tail, c.Dir())}
	for _, cl := range clients {
		t.Cleanup(cl.close)
	}
	l := startCourseLoad(t, clients, seed, cold, h)
	phases := []coursePhase{{name: "one node", prefix: "p0-", start: h.Now()}}
	next := func(name string) {
		phases[len(phases)-1].end = h.Now()
		prefix := fmt.Sprintf("p%d-", len(phases))
		l.rekey(prefix)
		phases = append(phases, coursePhase{name: name, prefix: prefix, start: h.Now()})
	}
	time.Sleep(time.Second)
	next(fmt.Sprintf("a node joins a chain of one holding %d keys", courseJoinKeys))
	old := c.At(0)
	joined := time.Now()
	n := c.Add()
	nemesisWaitTailOf(t, c, n, 2)
	t.Logf("%v registered, and the chain served reads at it after %v", n, time.Since(joined).Round(time.Millisecond))
	// It forwards reads until it has the table: long enough for that.
	time.Sleep(2 * time.Second)
	next("the old node killed: the newcomer alone")
	old.Kill()
	c.WaitGone(old, faultRecover)
	nemesisWaitTailOf(t, c, n, 1)
	time.Sleep(courseSettle)
	phases = append(phases, coursePhase{name: "preloaded keys, whole run", prefix: "j"})
	phases[len(phases)-2].end = h.Now()
	phases[len(phases)-1].start, phases[len(phases)-1].end = phases[0].start, h.Now()
	checkCourseRun(t, c, l, phases, cold)
}

// nemesisWaitTailOf waits until n is the tail of a chain of size members
// and serves reads.
func nemesisWaitTailOf(t *testing.T, c *cluster.Cluster, n *cluster.Node, size int) {
	t.Helper()
	c.WaitView(func(v zkwatch.View) bool {
		m, ok := v.Tail()
		return ok && m.Addr == n.Addr && len(v.Members) == size
	}, faultRecover)
	if got := c.WaitTailServes(faultRecover); got != n {
		t.Fatalf("the chain's tail is %v, want %v", got, n)
	}
}

// TestFalseNotFound checks the checker: which "not found" answers it
// takes for false ones.
func TestFalseNotFound(t *testing.T) {
	put := func(call, ret int64, out cluster.Outcome) cluster.Op {
		return cluster.Op{Input: cluster.Input{Kind: cluster.Put, Key: "k", Value: "v"}, Output: cluster.Output{Outcome: out}, Call: call, Return: ret}
	}
	del := func(call, ret int64, out cluster.Outcome) cluster.Op {
		return cluster.Op{Input: cluster.Input{Kind: cluster.Del, Key: "k"}, Output: cluster.Output{Outcome: out}, Call: call, Return: ret}
	}
	get := func(call, ret int64) cluster.Op {
		return cluster.Op{Input: cluster.Input{Kind: cluster.Get, Key: "k"}, Output: cluster.Output{NotFound: true}, Call: call, Return: ret}
	}
	tests := []struct {
		name string
		ops  []cluster.Op
		want int
	}{
		{"never written", []cluster.Op{get(0, 1)}, 0},
		{"after an acknowledged put", []cluster.Op{put(0, 1, cluster.OK), get(2, 3)}, 1},
		{"concurrent with the put", []cluster.Op{put(0, 3, cluster.OK), get(2, 4)}, 0},
		{"after an unacknowledged put", []cluster.Op{put(0, 1, cluster.Indefinite), get(2, 3)}, 0},
		{"after a del that followed the put", []cluster.Op{put(0, 1, cluster.OK), del(2, 3, cluster.OK), get(4, 5)}, 0},
		{"del concurrent with the get", []cluster.Op{put(0, 1, cluster.OK), get(2, 5), del(3, 4, cluster.OK)}, 0},
		{"del that may still take effect", []cluster.Op{del(0, 1, cluster.Indefinite), put(2, 3, cluster.OK), get(4, 5)}, 0},
		{"del done before the put", []cluster.Op{del(0, 1, cluster.OK), put(2, 3, cluster.OK), get(4, 5)}, 1},
		{"del called after the get returned", []cluster.Op{put(0, 1, cluster.OK), get(2, 3), del(4, 5, cluster.OK)}, 1},
		{"a later put, the del between the two", []cluster.Op{put(0, 1, cluster.OK), del(2, 3, cluster.OK), put(4, 5, cluster.OK), get(6, 7)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := len(falseNotFound(tt.ops)); got != tt.want {
				t.Errorf("falseNotFound found %d, want %d", got, tt.want)
			}
		})
	}
}
