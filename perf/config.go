package perf

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Op is one kind of request a workload sends.
type Op uint8

// The operations of a workload: a put (SET in Redis), a get (GET) and a
// del (DEL).
const (
	OpPut Op = iota + 1
	OpGet
	OpDel
)

// String returns the operation's name as workloads spell it.
func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpGet:
		return "get"
	case OpDel:
		return "del"
	}
	return "Op(" + strconv.Itoa(int(o)) + ")"
}

// Workload says which operations a run sends: a single one, or a mix of
// gets and puts.
type Workload struct {
	// Mix is true for a read/write mix; Op is then unused.
	Mix bool
	// Op is the only operation of a workload that is not a mix.
	Op Op
	// ReadFraction is, for a mix, the fraction of gets from 0 to 1; the
	// rest are puts.
	ReadFraction float64
}

// ParseWorkload parses "put", "get", "del" or "mix:F", where F is the
// fraction of reads from 0 to 1 ("mix:0.9" is 90% gets, 10% puts).
func ParseWorkload(s string) (Workload, error) {
	switch s {
	case "put":
		return Workload{Op: OpPut}, nil
	case "get":
		return Workload{Op: OpGet}, nil
	case "del":
		return Workload{Op: OpDel}, nil
	}
	if f, ok := strings.CutPrefix(s, "mix:"); ok {
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || !(r >= 0 && r <= 1) {
			return Workload{}, fmt.Errorf("workload %q: the read fraction must be a number from 0 to 1", s)
		}
		return Workload{Mix: true, ReadFraction: r}, nil
	}
	return Workload{}, fmt.Errorf("workload %q is not put, get, del or mix:<read fraction>", s)
}

// String returns the workload as ParseWorkload accepts it.
func (w Workload) String() string {
	if w.Mix {
		return "mix:" + strconv.FormatFloat(w.ReadFraction, 'g', -1, 64)
	}
	return w.Op.String()
}

// Pick returns the operation of one request, given u drawn uniformly from
// [0, 1).
func (w Workload) Pick(u float64) Op {
	if !w.Mix {
		return w.Op
	}
	if u < w.ReadFraction {
		return OpGet
	}
	return OpPut
}

// HasWrites reports whether the workload may send puts or dels.
func (w Workload) HasWrites() bool {
	if w.Mix {
		return w.ReadFraction < 1
	}
	return w.Op == OpPut || w.Op == OpDel
}

// HasReads reports whether the workload may send gets.
func (w Workload) HasReads() bool {
	if w.Mix {
		return w.ReadFraction > 0
	}
	return w.Op == OpGet
}

// Deletes reports whether the workload sends dels.
func (w Workload) Deletes() bool { return !w.Mix && w.Op == OpDel }

// Dist is how keys are drawn from the key space.
type Dist uint8

// The key distributions.
const (
	// Uniform draws every key with the same probability.
	Uniform Dist = iota
	// Zipf draws key i with a probability proportional to 1/(1+i)^s,
	// so that a few keys are hot.
	Zipf
)

// ParseDist parses "uniform" or "zipf".
func ParseDist(s string) (Dist, error) {
	switch s {
	case "uniform":
		return Uniform, nil
	case "zipf":
		return Zipf, nil
	}
	return 0, fmt.Errorf("key distribution %q is not uniform or zipf", s)
}

// String returns the distribution's name as ParseDist accepts it.
func (d Dist) String() string {
	if d == Zipf {
		return "zipf"
	}
	return "uniform"
}

// Kind is the kind of server a Target is.
type Kind uint8

// The kinds of target.
const (
	// Direct is one table_server, standalone or a member of a chain,
	// that takes every request.
	Direct Kind = iota
	// Chain is a chain found through ZooKeeper: writes go to its head,
	// reads to every member or to its tail (Target.ReadTail).
	Chain
	// Redis is a Redis server speaking RESP.
	Redis
)

// String returns "direct", "chain" or "redis".
func (k Kind) String() string {
	switch k {
	case Direct:
		return "direct"
	case Chain:
		return "chain"
	case Redis:
		return "redis"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Target is what a run sends its requests to.
type Target struct {
	// Kind is the kind of server, or Chain.
	Kind Kind
	// Addr is host:port of the server, or of ZooKeeper for a Chain
	// (a comma-separated list of them is accepted there).
	Addr string
	// ChainMembers, for a Chain, makes Run wait (up to Config.Timeout)
	// until ZooKeeper lists at least this many members.
	ChainMembers int
	// ReadTail, for a Chain, sends every read to its tail, as the course's
	// clients do; otherwise connection i reads from member i mod n, head
	// first, so that reads spread evenly over the chain.
	ReadTail bool
	// RedisWait, for Redis, sends "WAIT RedisWait 0" after every write
	// (SET or DEL), in the same pipeline, and requires its reply to be at
	// least RedisWait, so that every write is acknowledged only once that
	// many replicas have it.
	RedisWait int
	// PIDs are local processes that serve the target, whose CPU time Run
	// measures over the load (Result.ServerCPU); Linux only. For a chain,
	// list them in chain order, head first, to read the result by role.
	PIDs []int
}

// System returns "redis" for a Redis target and "chaintable" otherwise.
func (t Target) System() string {
	if t.Kind == Redis {
		return "redis"
	}
	return "chaintable"
}

// KeyPrefix starts every key a run sends: key i is KeyPrefix followed by i
// in decimal.
const KeyPrefix = "key:"

// Defaults of a Config's zero fields (table_perf's flag defaults for
// DefaultValueSize), and bounds.
const (
	DefaultConns     = 50
	DefaultPipeline  = 1
	DefaultValueSize = 32
	DefaultKeys      = 100000
	DefaultZipfS     = 1.1
	DefaultTimeout   = 10 * time.Second
	// DefaultRequests is the length of a run that sets neither Requests
	// nor Duration.
	DefaultRequests = 100000
	// MaxValueSize bounds ValueSize; it keeps a reply within one frame
	// of the course format's limits and within the reader's buffer.
	MaxValueSize = 16 << 20
	// MaxPipeline bounds Pipeline.
	MaxPipeline = 4096
)

// Config describes one run.
type Config struct {
	Target Target
	// Conns is the number of connections, each driven by its own
	// goroutine (against a chain, the number of head/tail pairs).
	Conns int
	// Pipeline is the number of requests each connection has in flight:
	// the size of the batches it sends.
	Pipeline int
	// Requests, when positive, ends the run after this many requests in
	// all.
	Requests int64
	// Duration, when positive, ends the run once it has passed (the
	// batches in flight still complete). With both Requests and Duration
	// the run ends at whichever comes first; with neither it sends
	// DefaultRequests requests.
	Duration time.Duration
	// ValueSize is the length of every value put, in bytes (0 puts
	// empty values; table_perf defaults to DefaultValueSize).
	ValueSize int
	// Keys is the size of the key space: keys 0 to Keys-1.
	Keys int
	// Workload is the operations to send.
	Workload Workload
	// Dist is how keys are drawn.
	Dist Dist
	// ZipfS is the exponent s > 1 of the Zipf distribution.
	ZipfS float64
	// Preload puts every key of the key space once, before the run and
	// outside its measurements.
	Preload bool
	// Filled says that an earlier run's preload filled the key space and
	// nothing deleted from it since: a miss is then an error, as after a
	// Preload.
	Filled bool
	// Seed seeds the generators of operations and keys: runs with the
	// same seed and Conns send the same requests per connection.
	Seed uint64
	// Timeout bounds connecting, finding the chain, and waiting for the
	// replies to one batch; a connection that times out counts its
	// unanswered requests as errors and stops.
	Timeout time.Duration
	// Progress, when not nil, receives a progress line about twice a
	// second, rewritten in place with \r, and is cleared at the end. Give
	// it a terminal only.
	Progress io.Writer
}

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.Pipeline == 0 {
		c.Pipeline = DefaultPipeline
	}
	if c.Keys == 0 {
		c.Keys = DefaultKeys
	}
	if c.ZipfS == 0 {
		c.ZipfS = DefaultZipfS
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Requests == 0 && c.Duration == 0 {
		c.Requests = DefaultRequests
	}
	if c.Workload == (Workload{}) {
		c.Workload = Workload{Op: OpPut}
	}
	return c
}

// Validate reports the first thing wrong with c, after defaults are
// applied to its zero fields.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Target.Addr == "":
		return errors.New("no target address")
	case c.Conns < 1:
		return fmt.Errorf("connections must be at least 1, got %d", c.Conns)
	case c.Pipeline < 1 || c.Pipeline > MaxPipeline:
		return fmt.Errorf("pipeline depth must be from 1 to %d, got %d", MaxPipeline, c.Pipeline)
	case c.Requests < 0:
		return fmt.Errorf("number of requests must not be negative, got %d", c.Requests)
	case c.Duration < 0:
		return fmt.Errorf("duration must not be negative, got %s", c.Duration)
	case c.ValueSize < 0 || c.ValueSize > MaxValueSize:
		return fmt.Errorf("value size must be from 0 to %d bytes, got %d", MaxValueSize, c.ValueSize)
	case c.Keys < 1:
		return fmt.Errorf("key space must hold at least 1 key, got %d", c.Keys)
	case c.Dist == Zipf && !(c.ZipfS > 1):
		return fmt.Errorf("zipf exponent must be greater than 1, got %g", c.ZipfS)
	case c.Timeout < 0:
		return fmt.Errorf("timeout must be positive, got %s", c.Timeout)
	case c.Target.RedisWait < 0:
		return fmt.Errorf("redis WAIT replica count must not be negative, got %d", c.Target.RedisWait)
	case c.Target.RedisWait > 0 && c.Target.Kind != Redis:
		return errors.New("redis WAIT applies to a Redis target only")
	case c.Target.ChainMembers < 0:
		return fmt.Errorf("chain member count must not be negative, got %d", c.Target.ChainMembers)
	case c.Target.ChainMembers > 0 && c.Target.Kind != Chain:
		return errors.New("waiting for chain members applies to a chain target only")
	}
	for _, pid := range c.Target.PIDs {
		if pid < 1 {
			return fmt.Errorf("process ID must be positive, got %d", pid)
		}
	}
	if c.Target.Kind == Chain {
		for _, a := range strings.Split(c.Target.Addr, ",") {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("ZooKeeper address %q is not host:port", a)
			}
		}
	} else if _, _, err := net.SplitHostPort(c.Target.Addr); err != nil {
		return fmt.Errorf("%s address %q is not host:port", c.Target.System(), c.Target.Addr)
	}
	if c.Workload.Mix {
		if !(c.Workload.ReadFraction >= 0 && c.Workload.ReadFraction <= 1) {
			return fmt.Errorf("read fraction must be from 0 to 1, got %g", c.Workload.ReadFraction)
		}
	} else if c.Workload.Op < OpPut || c.Workload.Op > OpDel {
		return fmt.Errorf("bad workload operation %v", c.Workload.Op)
	}
	return nil
}

// strictMisses reports whether a miss is an error: every key was put by
// a preload and nothing deletes keys.
func (c Config) strictMisses() bool { return (c.Preload || c.Filled) && !c.Workload.Deletes() }
